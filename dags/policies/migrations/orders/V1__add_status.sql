-- Orders get an explicit status (filled by the backfill-status transform).
ALTER TABLE public.orders ADD COLUMN status text;
