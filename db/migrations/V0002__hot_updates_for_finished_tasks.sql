-- Finishing a task (status, verdict, processed_at) should touch no indexed column, so
-- PostgreSQL can update the row in place (a HOT update: no new index entries, far
-- less WAL). The relay's partial index named `status` in its predicate, which made
-- every finishing UPDATE a full one; the relay still filters on status itself.
DROP INDEX moderation_results_unpublished_idx;
CREATE INDEX moderation_results_unpublished_idx ON moderation_results (created_at)
    WHERE published_at IS NULL;

-- Room on each page for the finished version of its rows, which HOT needs.
ALTER TABLE moderation_results SET (fillfactor = 70);
