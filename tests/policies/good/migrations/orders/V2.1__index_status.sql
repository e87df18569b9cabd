CREATE INDEX IF NOT EXISTS orders_status_idx ON public.orders (status);
