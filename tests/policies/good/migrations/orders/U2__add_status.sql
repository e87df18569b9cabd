ALTER TABLE public.orders DROP COLUMN IF EXISTS status;
