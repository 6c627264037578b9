-- River's private.river_job_state_in_bitmask answers as before, from an expression a sixth the
-- size (issue 12).
--
-- The function is inlined into the predicate of River's unique index river_job_unique_idx
-- ("unique_key is not null and unique_states is not null and river_job_state_in_bitmask(
-- unique_states, state)"), and Postgres plans and compiles a partial index's predicate again
-- for every statement that inserts into the table (ExecPrepareQual on the relcache's copy,
-- before the first row), and once more for the ON CONFLICT check of a unique insert. River's
-- body is a CASE of eight branches, each an enum comparison and a get_bit call: planning it
-- (eval_const_expressions looks every function up again) was about 45k backend instructions
-- per queued job: callgrind on a throwaway PostgreSQL 15, BenchmarkEnqueueCRMSyncInPipe/pending,
-- 661k -> 615k per transaction with a new job. Every River update of a job that is not HOT
-- (its fetch, its completion: state is indexed) pays it too.
--
-- Now the bit is found by the state's position in the enum's own order: River numbers the
-- bits by that order (available = bit 7 ... scheduled = bit 0; 'pending', added by River 004
-- after 'discarded', is bit 3), so bit 8 - array_position(<the eight states in order>, state).
-- Same answer for every input, nulls included (a null state: false, as River's ELSE; a null
-- bitmask: null), so the index's rows and River's ON CONFLICT inference (its WHERE names the
-- function, inlined the same way) are unchanged and nothing is rebuilt;
-- TestRiversStateBitmaskAnswersAsRiversOwn compares the two over every state and bitmask.
--
-- A River migration that replaces this function again (a new state would need a new bit)
-- brings River's CASE back, which is correct and only dearer; re-apply this shape then if the
-- states are still in the enum's order.
create or replace function private.river_job_state_in_bitmask(bitmask bit(8), state private.river_job_state)
returns boolean
language sql
immutable
as $$
    select get_bit(bitmask, 8 - array_position(
        '{available,cancelled,completed,discarded,pending,retryable,running,scheduled}'::private.river_job_state[], state)) = 1
        and state is not null;
$$;
