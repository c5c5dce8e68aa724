// Calls the calculator example from JavaScript, over HTTP and WebSocket.
//
//   cargo run --example calculator -- server 127.0.0.1:7000
//   node examples/js/calculator.mjs http://127.0.0.1:7000/rpc
//
// (Node 20-21: add --experimental-websocket for the WebSocket half.)
// Prints each call and its answer; exits non-zero if any answer is wrong.

import { HttpClient, WsClient, RpcError, codes } from "./rpc.mjs";

const url = process.argv[2] ?? "http://127.0.0.1:7000/rpc";
let failures = 0;

function check(what, got, expected) {
  const ok = JSON.stringify(got) === JSON.stringify(expected);
  console.log(`${ok ? "ok  " : "FAIL"} ${what} = ${JSON.stringify(got)}`);
  if (!ok) {
    console.log(`     expected ${JSON.stringify(expected)}`);
    failures++;
  }
}

async function refusal(call) {
  try {
    return { result: await call };
  } catch (err) {
    if (!(err instanceof RpcError)) throw err;
    return { code: err.code, data: err.data };
  }
}

console.log(`-- over HTTP: ${url}`);
const calc = new HttpClient(url);
check("add(5, 3)", await calc.call("add", [5, 3]), 8);
check("Calculator.add(a: 2, b: 40)", await calc.call("Calculator.add", { a: 2, b: 40 }), 42);
check("div(7, 2)", await calc.call("div", [7, 2]), 3);
check("div(7, 0)", await refusal(calc.call("div", [7, 0])), { code: codes.APPLICATION_ERROR, data: "DivisionByZero" });
check("stats([3, 1, 4])", await calc.call("stats", { numbers: [3, 1, 4] }), { count: 3, sum: 8, min: 1, max: 4 });
check("stats([])", await calc.call("stats", [[]]), { count: 0, sum: 0, min: null, max: null });
check("greet(\"Ada\")", await calc.call("greet", ["Ada"]), "Hello, Ada!");
check("slowEcho(0, \"camelCase\")", await calc.call("slowEcho", { millis: 0, value: "camelCase" }), "camelCase");
check(
  "slow_echo(2000, \"late\") with a 50 ms deadline",
  (await refusal(calc.call("slow_echo", [2000, "late"], { timeout: 50 }))).code,
  codes.DEADLINE_EXCEEDED,
);
check("sqrt(2)", (await refusal(calc.call("sqrt", [2]))).code, codes.METHOD_NOT_FOUND);
check("add(1, \"one\")", (await refusal(calc.call("add", [1, "one"]))).code, codes.INVALID_PARAMS);
const batch = await calc.batch([["add", [1, 1]], ["greet", ["Grace"]], ["div", [1, 0]]]);
check("batch: add, greet, div", [batch[0].result, batch[1].result, batch[2].error.data], [2, "Hello, Grace!", "DivisionByZero"]);
await calc.notify("greet", ["nobody"]);
const document = await calc.discover();
check("rpc.discover: methods", document.methods.map((m) => m.name).sort(), [
  "Calculator.add",
  "Calculator.div",
  "Calculator.greet",
  "Calculator.slow_echo",
  "Calculator.stats",
]);

console.log(`-- over WebSocket`);
const ws = await WsClient.connect(url);
check("add(5, 3)", await ws.call("add", [5, 3]), 8);
check("div(7, 0)", await refusal(ws.call("div", [7, 0])), { code: codes.APPLICATION_ERROR, data: "DivisionByZero" });
// Many calls at once on one socket; a slow one does not hold up the rest.
const slow = ws.call("slow_echo", [200, "slow"]);
const sums = await Promise.all(Array.from({ length: 100 }, (_, i) => ws.call("add", [i, i])));
check("100 concurrent adds", sums.every((sum, i) => sum === 2 * i), true);
check("slow_echo(200, \"slow\")", await slow, "slow");
ws.close();

if (failures > 0) {
  console.log(`${failures} calls answered wrongly`);
  process.exit(1);
}
console.log("all calls answered as expected");
