// Calls the route handler the way Next.js would, and prints its JSON answer.
// Usage: KILN_API_URL=... KILN_API_KEY=... node call.mjs ws_1
import { POST } from "./route.js";

const wsId = process.argv[2] ?? "ws_1";
const request = new Request("http://localhost/api/schedule", {
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ ws_id: wsId }),
});
const response = await POST(request);
const body = await response.json();
console.log(JSON.stringify({ status: response.status, body }));
process.exit(response.ok ? 0 : 1);
