// Resident: `bun run src/serve.ts` serves the resident protocol on 127.0.0.1:$AGENT_SERVER_PORT.
import { serveResident } from "../../harness/resident.ts";
import { ask } from "./agent.ts";

const server = serveResident(ask);
console.error(`research-demo resident server on ${server.hostname}:${server.port}, pid ${process.pid}`);
