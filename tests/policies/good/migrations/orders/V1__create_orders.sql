CREATE TABLE IF NOT EXISTS public.orders (id bigint PRIMARY KEY, shipped_at timestamptz);
