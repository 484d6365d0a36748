// node tests/edge/check_cloudfront_function.cjs FUNCTION.js CASES.json   (node:test, TAP output)
// Runs the generated CloudFront Function on the shared routing cases.
const test = require("node:test");
const assert = require("node:assert");
const fs = require("node:fs");
const [fnPath, casesPath] = process.argv.slice(-2);
const fn = require(fnPath);
const cases = JSON.parse(fs.readFileSync(casesPath, "utf8"));

function cfQuery(query) {  // CloudFront's event shape, values percent-encoded as they arrive
  const out = {};
  for (const [name, value] of Object.entries(query)) out[name] = { value: encodeURIComponent(value) };
  return out;
}

for (const c of cases) {
  test(`${c.path}?${new URLSearchParams(c.query)}`, () => {
    const request = { uri: "/" + c.path, querystring: cfQuery(c.query) };
    const out = fn.handler({ request });
    assert.strictEqual(out.uri, "/" + c.key);
    if (c.key !== c.path) assert.deepStrictEqual(out.querystring, {});
  });
}

test("a site prefix is kept and other paths are left alone", () => {
  const prefixed = require(fnPath.replace(/\.js$/, ".prefixed.js"));
  const out = prefixed.handler({ request: { uri: "/nlst/series", querystring: cfQuery({ Modality: "CT" }) } });
  assert.strictEqual(out.uri, "/nlst/_q/series/Modality/4354");
  const other = prefixed.handler({ request: { uri: "/other/series", querystring: cfQuery({ Modality: "CT" }) } });
  assert.strictEqual(other.uri, "/other/series");
});
