// Calls the order service of the microservices example from JavaScript:
// JavaScript speaks JSON-RPC to the order service, which calls the user
// service over the binary protocol, with what remains of the caller's
// deadline.
//
//   cargo run --example microservices -- users 127.0.0.1:7001
//   cargo run --example microservices -- orders 127.0.0.1:7002 127.0.0.1:7001
//   node examples/js/microservices.mjs http://127.0.0.1:7002/rpc
//
// Exits non-zero if an answer is wrong.

import { HttpClient, RpcError, codes } from "./rpc.mjs";

const url = process.argv[2] ?? "http://127.0.0.1:7002/rpc";
const orders = new HttpClient(url, { timeout: 2000 });
let failures = 0;

function check(what, ok, got) {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}: ${JSON.stringify(got)}`);
  if (!ok) failures++;
}

const order = await orders.call("createOrder", { userId: 1, item: "keyboard" });
check("createOrder(1, keyboard)", order.customer === "Ada" && order.item === "keyboard", order);

try {
  const unexpected = await orders.call("Orders.create_order", [99, "mouse"]);
  check("create_order(99, mouse) is refused", false, unexpected);
} catch (err) {
  const refused = err instanceof RpcError && err.code === codes.APPLICATION_ERROR;
  check("create_order(99, mouse) is refused", refused && err.data.UnknownCustomer === 99, err.data ?? err.message);
}

// User 7 takes 400 ms to look up; the whole chain gets 150 ms.
try {
  const late = await orders.call("create_order", [7, "monitor"], { timeout: 150 });
  check("create_order(7, monitor) in 150 ms fails", false, late);
} catch (err) {
  // Either the order service's own deadline passes, or its call to the user
  // service runs out of the budget it inherited.
  const deadline = err.code === codes.DEADLINE_EXCEEDED || err.data?.UsersUnavailable !== undefined;
  check("create_order(7, monitor) in 150 ms fails", deadline, err.data ?? err.message);
}

if (failures > 0) process.exit(1);
console.log("all calls answered as expected");
