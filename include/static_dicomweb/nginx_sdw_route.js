// static-dicomweb: QIDO query routing for nginx (njs 0.7.9 or later).  Written by
// `static-dicomweb nginx-config --out DIR` beside nginx.conf; do not edit: regenerate.
// Above this glue sits the CloudFront Function (`static-dicomweb edge-function`), so queries are
// routed by its route() and the one table of include/static_dicomweb/routing.py.

// njs has no Annex B unescape(); the edge function's utf8Hex needs it for %XX of ASCII only.
function unescape(text) {
  return text.replace(/%([0-9A-Fa-f]{2})/g, function (m, hex) {
    return String.fromCharCode(parseInt(hex, 16));
  });
}

// A raw query string in CloudFront's shape ({name: {value}}, values still percent-encoded),
// names decoded and the first value of each kept, as serve's parse_qs does.
function cloudfrontQuery(args) {
  var out = {};
  var pairs = (args || "").split("&");
  for (var i = 0; i < pairs.length; i++) {
    if (!pairs[i]) continue;
    var eq = pairs[i].indexOf("=");
    var rawName = eq < 0 ? pairs[i] : pairs[i].substring(0, eq);
    var name;
    try {
      name = decodeURIComponent(rawName.replace(/\+/g, " "));
    } catch (e) {
      name = rawName;
    }
    if (!(name in out)) out[name] = { value: eq < 0 ? "" : pairs[i].substring(eq + 1) };
  }
  return out;
}

// js_set $sdw_route: the URI of the object that answers a QIDO query on studies or series.
function routeUri(r) {
  return "/" + route(r.uri.substring(1), cloudfrontQuery(r.variables.args));
}

export default { routeUri: routeUri };
