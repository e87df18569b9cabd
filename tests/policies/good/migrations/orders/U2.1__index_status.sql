DROP INDEX IF EXISTS public.orders_status_idx;
