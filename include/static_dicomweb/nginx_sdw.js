// static-dicomweb: nginx's half of serving a site folder (njs 0.7.9 or later): every object's
// headers, and S3's answers for a missing key.  Written by `static-dicomweb nginx-config --out DIR`
// beside nginx.conf; do not edit: regenerate.  Query routing is in static-dicomweb-route.js,
// imported only where queries are answered: njs copies a location's whole module set for every
// request, and the routing code would double what each object's request costs.
// Headers follow from the key and the body's first bytes, as keys.headers_for derives them
// (the portable folder, mapping 3: docs/site-layout.md); tests/test_nginx.py holds the two equal.
import fs from "fs";

var HEAD_BYTES = 512;
var IMMUTABLE = "public, max-age=31536000, immutable";
var INDEX = "public, max-age=60";
var DICOM_JSON = "application/dicom+json";
var MULTIPART_KEY =
  /^studies\/[^/]+\/series\/[^/]+(?:\/instances\/[^/]+(?:\/(?:frames|bulkdata)\/[^/]+)?)?$/;
var INSTANCE_LEVEL = /^studies\/[^/]+\/series\/[^/]+\/instances\/[^/]+(?:\/.*)?$/;
var PART_HEAD = /^--([!-~]{1,70})\r\nContent-Type: ([^\r\n]+)\r\n\r\n/;
var BY_EXTENSION = {
  ".json": "application/json", ".jsonl": "application/x-ndjson", ".html": "text/html",
  ".jpg": "image/jpeg", ".png": "image/png"
};

// The first bytes of a file (all of it when shorter), or null when it cannot be read.
function readHead(path) {
  var fd;
  try {
    fd = fs.openSync(path);
  } catch (e) {
    return null;
  }
  try {
    var buf = Buffer.alloc(HEAD_BYTES);
    var n = fs.readSync(fd, buf, 0, HEAD_BYTES, 0);
    return buf.subarray(0, n);
  } finally {
    fs.closeSync(fd);
  }
}

// The multipart part header as text, through its blank line (bytes as Latin-1, as Python reads it).
function partHead(head) {
  var text = "";
  for (var i = 0; i < head.length; i++) {
    text += String.fromCharCode(head[i]);
    if (i >= 3 && head[i] === 10 && head[i - 1] === 13 && head[i - 2] === 10 && head[i - 3] === 13) {
      break;
    }
  }
  return text;
}

// keys.headers_for in JavaScript: the Content-Type, Content-Encoding and Cache-Control of `key`.
function headersFor(key, head) {
  var out = { "Cache-Control": INSTANCE_LEVEL.test(key) ? IMMUTABLE : INDEX };
  var name = key.substring(key.lastIndexOf("/") + 1);
  var gzipped = false;
  if (MULTIPART_KEY.test(key)) {
    var match = PART_HEAD.exec(partHead(head));
    if (match === null) return null;  // headers lost: the body names no boundary
    var part = match[2];
    var semi = part.indexOf(";");
    var partType = (semi < 0 ? part : part.substring(0, semi)).trim();
    var params = semi < 0 ? "" : ";" + part.substring(semi + 1);
    out["Content-Type"] = 'multipart/related; type="' + partType + '"' + params +
      "; boundary=" + match[1];
  } else if (name === "thumbnail") {
    out["Content-Type"] = "image/jpeg";
  } else if (/^(studies|series|_q\/)/.test(key)) {
    out["Content-Type"] = DICOM_JSON;
    gzipped = true;
  } else {
    var dot = name.lastIndexOf(".");
    out["Content-Type"] = BY_EXTENSION[dot < 0 ? "" : name.substring(dot)] || "application/octet-stream";
    gzipped = out["Content-Type"] === "application/json" || out["Content-Type"] === "application/x-ndjson";
  }
  if (gzipped && head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) {
    out["Content-Encoding"] = "gzip";
  }
  return out;
}

// Whether nginx's range filter (after this one) answers 206: one satisfiable byte range.
function partial(r) {
  var range = /^bytes=(\d*)-(\d*)$/.exec(r.headersIn.Range || "");
  var size = parseInt(r.headersOut["Content-Length"], 10);
  if (r.status !== 200 || range === null || !(size > 0) || (!range[1] && !range[2])) return false;
  if (!range[1]) return parseInt(range[2], 10) > 0;
  return parseInt(range[1], 10) < size && !(range[2] && parseInt(range[2], 10) < parseInt(range[1], 10));
}

// js_header_filter of every object: its headers, and its user metadata from the `.meta` file.
function headers(r) {
  if (r.status !== 200 && r.status !== 206 && r.status !== 304) return;
  var file = r.variables.request_filename;
  var head = readHead(file);
  var found = head === null ? null : headersFor(r.uri.substring(1), head);
  if (found === null) {
    r.error("static-dicomweb: " + file + ": headers lost: the body does not start with a " +
            "multipart boundary and part Content-Type");
    found = { "Content-Type": "application/octet-stream", "Cache-Control": INDEX };
  }
  for (var name in found) r.headersOut[name] = found[name];
  if (partial(r)) r.headersOut["Accept-Ranges"] = "bytes";  // S3 says it on a 206 too; nginx does not
  // nginx tested for the .meta file (a failed open costs njs far more than nginx's stat)
  var metaFile = r.variables.sdw_meta;
  if (!metaFile) return;
  var meta;
  try {
    meta = JSON.parse(fs.readFileSync(metaFile));
  } catch (e) {
    r.error("static-dicomweb: " + metaFile + ": not a user metadata record: " + e);
    return;
  }
  for (var field in meta) r.headersOut["x-amz-meta-" + field] = String(meta[field]);
}

function escapeXml(text) {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;").replace(/'/g, "&#x27;");
}

// error_page 404: S3's NoSuchKey, or `[]` for a routed query whose answer does not exist
// (a filter that matches nothing); a missing page stays a 404, as in serve.
function missing(r) {
  var key = r.uri.replace(/^\/+/, "");
  var requested = r.variables.request_uri;
  var q = requested.indexOf("?");
  var path = q < 0 ? requested : requested.substring(0, q);
  var routed = q >= 0 && q + 1 < requested.length && /^\/(studies|series)$/.test(path) &&
    key !== path.substring(1);
  if (routed && key.indexOf(".offset.") < 0) {
    r.headersOut["Content-Type"] = DICOM_JSON;
    r.return(200, "[]");
    return;
  }
  r.headersOut["Content-Type"] = "application/xml";
  r.return(404, '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code>' +
    "<Message>The specified key does not exist.</Message><Key>" + escapeXml(key) +
    "</Key></Error>");
}

export default { headers: headers, missing: missing };
