// The peer's side of `kiln bench keys`: graphile-worker runs one job at a time per named queue, so
// KEYS named queues are its form of "a limit of 1 per key". Bulk-inserts JOBS no-op jobs spread
// over KEYS queues (job i in queue "k" + i % KEYS), then drains them with one worker process, and
// the same number of jobs without a queue name in the same run, for the unconstrained rate.
// Env: DATABASE_URL, JOBS (default 50000), KEYS (default 10000), CONCURRENCY (default 100),
// LOCALQ (batch fetch size, default 500; 0 = off).
import { run, makeWorkerUtils, Logger } from "graphile-worker";
const logger = new Logger(() => () => {});
const connectionString = process.env.DATABASE_URL;
const N = Number(process.env.JOBS || 50000);
const KEYS = Number(process.env.KEYS || 10000);
const CONC = Number(process.env.CONCURRENCY || 100);
const LOCALQ = Number(process.env.LOCALQ ?? 500);
const utils = await makeWorkerUtils({ connectionString, logger });
await utils.migrate();

async function phase(keyed) {
  await utils.withPgClient((c) => c.query("delete from graphile_worker._private_jobs"));
  const spec = keyed
    ? "json_build_object('identifier','noop','payload',json_build_object('i',i),'queue_name','k' || (i % $2))"
    : "json_build_object('identifier','noop','payload',json_build_object('i',i))";
  let t0 = Date.now();
  await utils.withPgClient((c) => c.query(
    `select graphile_worker.add_jobs(array(select json_populate_recordset(null::graphile_worker.job_spec, json_agg(${spec})) from generate_series(1,$1) i))`,
    keyed ? [N, KEYS] : [N]));
  const insertMs = Date.now() - t0;
  let done = 0, resolveDone;
  const finished = new Promise((r) => (resolveDone = r));
  const preset = LOCALQ > 0 ? { preset: { worker: { localQueue: { size: LOCALQ }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } } } : {};
  t0 = Date.now();
  const runner = await run({ connectionString, concurrency: CONC, noHandleSignals: true, pollInterval: 1000, logger, ...preset,
    taskList: { noop: async () => { if (++done === N) resolveDone(); } } });
  await finished;
  const runMs = Date.now() - t0;
  await runner.stop();
  return { insert: N / insertMs * 1000, execute: N / runMs * 1000 };
}

const free = await phase(false);
const keyed = await phase(true);
await utils.release();
console.log(`graphile-worker keys=${KEYS} limit=1 jobs=${N} concurrency=${CONC} localQueue=${LOCALQ}`);
console.log(`unconstrained: ${free.execute.toFixed(0)} jobs/s`);
console.log(`keyed: ${keyed.execute.toFixed(0)} jobs/s (${(keyed.execute / free.execute).toFixed(2)} of unconstrained)`);
