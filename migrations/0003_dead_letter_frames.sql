-- A dead letter keeps a bounded prefix of its frame; for a frame that was cut, the whole frame's
-- length (characters) and SHA-256 let it be matched with the journal segment or recording it came from.
alter table public.bridge_dead_letters add column if not exists frame_length bigint;
alter table public.bridge_dead_letters add column if not exists frame_sha256 text;
