// A Next.js route handler (app/api/schedule/route.js) that hands a workspace's scheduling to
// Kiln and answers with the run's outcome. Plain JavaScript and fetch: no dependencies.
//
// Environment: KILN_API_URL (e.g. http://127.0.0.1:8080) and KILN_API_KEY (a key created with
// `kiln keys create --name nextjs --scope trigger`). A real app would usually return the run id
// at once and let the browser ask later; this one waits, to show both calls.

const WAIT_SLICE = "25s"; // one long-poll; Kiln answers 408 when the run is not final yet
const DEADLINE_MS = 120_000;

function kiln(path, init = {}) {
  const base = process.env.KILN_API_URL ?? "http://127.0.0.1:8080";
  return fetch(`${base}/api/v1${path}`, {
    ...init,
    headers: {
      authorization: `Bearer ${process.env.KILN_API_KEY}`,
      "content-type": "application/json",
      ...init.headers,
    },
  });
}

async function errorOf(response) {
  const body = await response.json().catch(() => ({}));
  return `${response.status} ${body.error?.code ?? ""}: ${body.error?.message ?? response.statusText}`;
}

export async function POST(request) {
  const { ws_id: wsId } = await request.json();
  if (typeof wsId !== "string" || wsId === "") {
    return Response.json({ error: "ws_id must be a non-empty string" }, { status: 400 });
  }

  // Trigger schedule-task for the workspace: one copy of the queue's limit per workspace, and
  // an idempotency key so a retried request does not schedule twice within the hour.
  const hour = new Date().toISOString().slice(0, 13);
  const triggered = await kiln("/tasks/schedule-task/trigger", {
    method: "POST",
    body: JSON.stringify({
      payload: { ws_id: wsId },
      options: { concurrencyKey: wsId, idempotencyKey: `schedule-${wsId}-${hour}`, tags: ["nextjs"] },
    }),
  });
  if (!triggered.ok) {
    return Response.json({ error: await errorOf(triggered) }, { status: 502 });
  }
  const { id, isCached } = await triggered.json();

  // Wait for the run to be final: each call long-polls up to WAIT_SLICE.
  const started = Date.now();
  while (Date.now() - started < DEADLINE_MS) {
    const waited = await kiln(`/runs/${id}/wait?timeout=${WAIT_SLICE}`);
    if (waited.status === 408) continue;
    if (!waited.ok) {
      return Response.json({ id, error: await errorOf(waited) }, { status: 502 });
    }
    const run = await waited.json();
    return Response.json({ id, isCached, status: run.status, output: run.output, error: run.error });
  }
  return Response.json({ id, isCached, status: "pending" }, { status: 202 });
}
