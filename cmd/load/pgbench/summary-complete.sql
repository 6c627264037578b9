-- River's completer as the kept delivery summary sees it: one statement that marks up to 60
-- running jobs completed (summary-writes.sql says how to run it).
update private.river_job set state = 'completed', finalized_at = now(), attempt = 1
where id in (select id from private.river_job where queue = 'summary_bench' and state = 'available'
             order by id limit 60 for update skip locked);
