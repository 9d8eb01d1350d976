// Resident Dexter: serves the resident protocol on 127.0.0.1:$AGENT_SERVER_PORT, one Agent per session.
import { serveResident } from "../harness/resident.ts";
import { ask } from "./dexter.ts";

const server = serveResident(ask);
console.error(`dexter resident server on ${server.hostname}:${server.port}, pid ${process.pid}`);
