'use strict';
// A minimal AWS Lambda Runtime API client (version 2018-06-01), standard library only:
//
//   node runtime.js HANDLER_FILE
//
// It does what the Node.js runtime Lambda provides does, in the parts the fleet benchmark uses:
// loads HANDLER_FILE (a CommonJS module exporting `handler`), then forever takes an event
// (GET /runtime/invocation/next), calls `await handler(event, context)` and posts the result
// as JSON (POST .../{id}/response) or the error as {errorType, errorMessage} (.../{id}/error).
//
// * Init: the module is loaded and, when it exports `init`, `await init()` runs before the
//   first /next: the equivalent of an ES module's top-level await on Lambda. A failure there
//   goes to /runtime/init/error and the process exits with status 1.
// * errorType is the error's `name`, as on Lambda (handlers set it: `DatabaseError`, ...).
// * An exception nothing caught (an 'error' event a module rethrows, a rejected promise nobody
//   awaits) ends the process, as it does on Lambda: reported for the invocation in flight
//   (Runtime.UncaughtException, Runtime.UnhandledPromiseRejection) or as an init error, then
//   exit status 129, after a `fleet: crashed` line on stderr.
// * AWS_LAMBDA_INITIALIZATION_TYPE=snap-start: GET /runtime/restore/next after init, before the
//   first /next (Lambda's SnapStart order); nothing is done before or after the snapshot.
// * One invocation at a time, whatever AWS_LAMBDA_MAX_CONCURRENCY says (Lambda's Node.js
//   runtime serves one per process).
//
// Every invocation leaves one line on stderr:
//   invocation <id> ok <result JSON> in <ms> ms
//   invocation <id> <errorType> in <ms> ms: <errorMessage>

const http = require('http');
const path = require('path');

const API = process.env.AWS_LAMBDA_RUNTIME_API;
const PREFIX = '/2018-06-01/runtime';
// One connection to the Runtime API, kept open across calls: a new TCP connection per call
// would add to every invocation's latency. No idle timeout: /next waits as long as it takes.
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

function log(line) {
    process.stderr.write(line + '\n');
}

function request(method, urlPath, body, headers) {
    const [host, port] = splitHostPort(API);
    return new Promise((resolve, reject) => {
        const payload = body === undefined ? undefined : Buffer.from(body, 'utf8');
        const req = http.request(
            {
                host,
                port,
                method,
                path: PREFIX + urlPath,
                agent,
                headers: Object.assign(
                    payload === undefined
                        ? {}
                        : { 'Content-Type': 'application/json', 'Content-Length': payload.length },
                    headers || {}
                ),
            },
            (res) => {
                const chunks = [];
                res.on('data', (c) => chunks.push(c));
                res.on('end', () =>
                    resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) })
                );
                res.on('error', reject);
            }
        );
        req.on('error', reject);
        req.end(payload);
    });
}

function splitHostPort(api) {
    const at = api.lastIndexOf(':');
    if (at <= 0) {
        throw new Error(`AWS_LAMBDA_RUNTIME_API is "${api}"; expected host:port`);
    }
    const host = api.slice(0, at).replace(/^\[|\]$/g, '');
    return [host, Number(api.slice(at + 1))];
}

/// Node decodes header values as latin-1; the Runtime API sends UTF-8.
function headerText(value) {
    return value === undefined ? undefined : Buffer.from(String(value), 'latin1').toString('utf8');
}

function errorDocument(err, fallbackType) {
    const type = (err && typeof err.name === 'string' && err.name) || fallbackType;
    const message = err && err.message !== undefined ? String(err.message) : String(err);
    return { errorType: type, errorMessage: message };
}

function post(urlPath, doc, errorType) {
    return postRaw(urlPath, JSON.stringify(doc), { 'Lambda-Runtime-Function-Error-Type': errorType });
}

let inFlight = null; // the request id being handled, for a crash report
let initDone = false;

async function crash(kind, err) {
    const doc = errorDocument(err, kind);
    doc.errorType = kind;
    log(`fleet: crashed ${kind}`);
    log(`runtime: ${kind}: ${err && err.stack ? err.stack : doc.errorMessage}`);
    try {
        if (inFlight !== null) {
            await post(`/invocation/${encodeURIComponent(inFlight)}/error`, doc, kind);
        } else if (!initDone) {
            await post('/init/error', doc, kind);
        }
    } finally {
        process.exit(129);
    }
}

process.on('uncaughtException', (err) => crash('Runtime.UncaughtException', err));
process.on('unhandledRejection', (err) => crash('Runtime.UnhandledPromiseRejection', err));

async function next() {
    // Failed polls (the API restarting) are retried for a while; a Runtime API that stays away
    // means the environment is gone, and so is this process.
    for (let failures = 0; ; ) {
        try {
            const r = await request('GET', '/invocation/next');
            if (r.status === 200) {
                return r;
            }
            log(`runtime: GET /runtime/invocation/next answered HTTP ${r.status}: ${r.body.toString().slice(0, 300)}`);
        } catch (e) {
            log(`runtime: GET /runtime/invocation/next failed: ${e.message}; trying again`);
        }
        if (++failures >= 20) {
            log('runtime: the Runtime API failed 20 times in a row; exiting');
            process.exit(1);
        }
        await new Promise((r) => setTimeout(r, 100));
    }
}

async function main() {
    if (!API) {
        log('runtime: AWS_LAMBDA_RUNTIME_API is not set; Lambda (or tests/lambda/emulator.py) sets it to host:port');
        process.exit(1);
    }
    const file = process.argv[2];
    let mod;
    try {
        if (!file) {
            throw Object.assign(new Error('usage: node runtime.js HANDLER_FILE'), { name: 'Runtime.InvalidEntrypoint' });
        }
        mod = require(path.resolve(file));
        if (typeof mod.handler !== 'function') {
            throw Object.assign(new Error(`${file} exports no function "handler"`), {
                name: 'Runtime.HandlerNotFound',
            });
        }
        if (typeof mod.init === 'function') {
            await mod.init();
        }
    } catch (err) {
        const doc = errorDocument(err, 'Runtime.InitError');
        log(`init: ${doc.errorType}: ${doc.errorMessage}`);
        await post('/init/error', doc, doc.errorType);
        process.exit(1);
    }
    initDone = true;

    if (process.env.AWS_LAMBDA_INITIALIZATION_TYPE === 'snap-start') {
        const r = await request('GET', '/restore/next');
        if (r.status !== 200) {
            log(`runtime: GET /runtime/restore/next answered HTTP ${r.status}`);
        }
    }

    for (;;) {
        const r = await next();
        const started = process.hrtime.bigint();
        const requestId = headerText(r.headers['lambda-runtime-aws-request-id']);
        const deadlineMs = Number(r.headers['lambda-runtime-deadline-ms']);
        const trace = r.headers['lambda-runtime-trace-id'];
        if (trace) {
            process.env._X_AMZN_TRACE_ID = trace;
        } else {
            delete process.env._X_AMZN_TRACE_ID;
        }
        if (!requestId) {
            log('runtime: /next answered without Lambda-Runtime-Aws-Request-Id; skipping it');
            continue;
        }
        inFlight = requestId;
        const context = {
            awsRequestId: requestId,
            invokedFunctionArn: headerText(r.headers['lambda-runtime-invoked-function-arn']) || '',
            functionName: process.env.AWS_LAMBDA_FUNCTION_NAME || '',
            callbackWaitsForEmptyEventLoop: true,
            getRemainingTimeInMillis: () =>
                Number.isFinite(deadlineMs) ? Math.max(0, deadlineMs - Date.now()) : 0,
        };
        let outcome;
        try {
            let event;
            try {
                event = JSON.parse(r.body.toString('utf8'));
            } catch (e) {
                throw Object.assign(new Error(`the event is not JSON: ${e.message}`), {
                    name: 'Runtime.UnmarshalError',
                });
            }
            const result = await mod.handler(event, context);
            outcome = { ok: true, body: JSON.stringify(result === undefined ? null : result) };
        } catch (err) {
            outcome = { ok: false, doc: errorDocument(err, 'Error') };
        }
        const ms = Number(process.hrtime.bigint() - started) / 1e6;
        const id = encodeURIComponent(requestId);
        if (outcome.ok) {
            log(`invocation ${requestId} ok ${outcome.body} in ${ms.toFixed(1)} ms`);
            const status = await postRaw(`/invocation/${id}/response`, outcome.body);
            if (status === 413) {
                log(`runtime: the response for ${requestId} was too large (HTTP 413)`);
            }
        } else {
            log(`invocation ${requestId} ${outcome.doc.errorType} in ${ms.toFixed(1)} ms: ${outcome.doc.errorMessage}`);
            await post(`/invocation/${id}/error`, outcome.doc, outcome.doc.errorType);
        }
        inFlight = null;
    }
}

/// Posts a body that is JSON text already. The Runtime API may be briefly unreachable (an
/// emulator restarting): three tries, then the post is given up and logged.
async function postRaw(urlPath, body, headers) {
    for (let attempt = 1; ; ++attempt) {
        try {
            const r = await request('POST', urlPath, body, headers);
            if (r.status !== 202 && r.status !== 413) {
                log(`runtime: POST ${urlPath} answered HTTP ${r.status}: ${r.body.toString().slice(0, 300)}`);
            }
            return r.status;
        } catch (e) {
            if (attempt >= 3) {
                log(`runtime: POST ${urlPath} failed ${attempt} times (${e.message}); giving up on it`);
                return 0;
            }
            await new Promise((resolve) => setTimeout(resolve, 50 * attempt));
        }
    }
}

main().catch((err) => crash('Runtime.UncaughtException', err));
