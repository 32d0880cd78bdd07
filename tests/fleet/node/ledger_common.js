'use strict';
// What the two ledger handlers share: the settings (DATABASE, DATABASE_PASSWORD_FILE), the
// event's checks, the errors and the log lines. The contract is examples/lambda's
// (ledger.hpp, ledger.cpp, docs/lambda.md): the same event, table, answer and error types, so
// that one driver checks every subject the same way.

const fs = require('fs');

/// An error with Lambda's errorType as its name (runtime.js posts err.name as errorType).
class LedgerError extends Error {
    constructor(type, message) {
        super(message);
        this.name = type;
    }
}

/// One line on stderr for the benchmark driver to count: "fleet: <what>".
function fleetLog(what) {
    process.stderr.write(`fleet: ${what}\n`);
}

// --- DATABASE --------------------------------------------------------------------------------

/// Splits a SOCI connect string's parameters ("host=h port=5432 password='a b'") into
/// [key, value] pairs: libpq's conninfo syntax (values bare or in single quotes, a backslash
/// escapes the next character), which is also a superset of what SOCI's MySQL backend reads.
function splitParameters(text, variable) {
    const pairs = [];
    let i = 0;
    const n = text.length;
    const isSpace = (c) => c === ' ' || c === '\t' || c === '\n' || c === '\r';
    while (i < n) {
        while (i < n && isSpace(text[i])) ++i;
        if (i >= n) break;
        let key = '';
        while (i < n && text[i] !== '=' && !isSpace(text[i])) key += text[i++];
        while (i < n && isSpace(text[i])) ++i;
        if (text[i] !== '=' || key === '') {
            throw new LedgerError(
                'InvalidConfiguration',
                `${variable}: expected name=value at offset ${i} (after "${key}"); write it like "host=db.example port=5432 dbname=app user=app"`
            );
        }
        ++i;
        while (i < n && isSpace(text[i])) ++i;
        let value = '';
        if (text[i] === "'" || text[i] === '"') {
            const quote = text[i++];
            let closed = false;
            while (i < n) {
                const c = text[i++];
                if (c === '\\' && i < n) {
                    value += text[i++];
                } else if (c === quote) {
                    closed = true;
                    break;
                } else {
                    value += c;
                }
            }
            if (!closed) {
                throw new LedgerError('InvalidConfiguration', `${variable}: the quoted value of ${key} is not closed`);
            }
        } else {
            while (i < n && !isSpace(text[i])) {
                const c = text[i++];
                value += c === '\\' && i < n ? text[i++] : c;
            }
        }
        pairs.push([key, value]);
    }
    return pairs;
}

function readFileSetting(path, what) {
    try {
        return fs.readFileSync(path);
    } catch (e) {
        throw new LedgerError('InvalidConfiguration', `cannot read ${what} ${path}: ${e.message}`);
    }
}

/// DATABASE_PASSWORD_FILE's password, checked as examples/lambda/config.cpp checks it (one
/// trailing newline dropped; empty, or a line break inside, refused). Read once, at init: the
/// modules keep the configuration they were created with.
function passwordFromFile(path) {
    let pw = readFileSetting(path, 'the password file (DATABASE_PASSWORD_FILE)').toString('utf8');
    if (pw.endsWith('\n')) pw = pw.slice(0, -1);
    if (pw.endsWith('\r')) pw = pw.slice(0, -1);
    if (pw === '' || /[\r\n\0]/.test(pw)) {
        throw new LedgerError(
            'InvalidConfiguration',
            `the password file ${path} (DATABASE_PASSWORD_FILE) holds ${pw === '' ? 'no password (empty)' : 'a line break or NUL inside the password'}; write the password alone, optionally followed by one newline`
        );
    }
    return pw;
}

/// DATABASE (and DATABASE_PASSWORD_FILE) as the key/value pairs of `scheme`'s connect string.
/// The message of every error names the variable, never its value (it may hold a password).
function databaseParameters(scheme) {
    const db = process.env.DATABASE;
    if (!db) {
        throw new LedgerError(
            'InvalidConfiguration',
            `DATABASE is not set; set it to a SOCI connect string, e.g. "${scheme}://host=db.example ${scheme === 'mysql' ? 'db' : 'dbname'}=app user=app password=…"`
        );
    }
    const prefix = `${scheme}://`;
    if (!db.startsWith(prefix)) {
        const seen = db.includes('://') ? `"${db.slice(0, db.indexOf('://') + 3)}"` : 'no scheme';
        throw new LedgerError('InvalidConfiguration', `DATABASE must start with ${prefix} for this handler; it has ${seen}`);
    }
    const params = new Map();
    for (const [k, v] of splitParameters(db.slice(prefix.length), 'DATABASE')) {
        params.set(k, v);
    }
    const file = process.env.DATABASE_PASSWORD_FILE;
    if (file) {
        if (params.has('password') || params.has('pass')) {
            throw new LedgerError(
                'InvalidConfiguration',
                'DATABASE_PASSWORD_FILE is set and DATABASE holds a password= too; remove the password from DATABASE (the file\'s content is the password)'
            );
        }
        params.set('password', passwordFromFile(file));
    }
    return params;
}

/// The settings of `params` the handler knows, through `mapping` (key -> function(value,
/// config)); any other key is refused, so that no setting is silently ignored.
function applyParameters(params, mapping, config) {
    for (const [key, value] of params) {
        const apply = mapping[key];
        if (!apply) {
            throw new LedgerError(
                'InvalidConfiguration',
                `DATABASE: this handler does not support the parameter "${key}"; it knows ${Object.keys(mapping).join(', ')}`
            );
        }
        apply(value, config);
    }
    return config;
}

function wholeSetting(name, text, low, high) {
    const v = Number(text);
    if (!/^[0-9]+$/.test(text) || !Number.isSafeInteger(v) || v < low || v > high) {
        throw new LedgerError('InvalidConfiguration', `${name} is "${text}"; it must be a whole number from ${low} to ${high}`);
    }
    return v;
}

/// `text` with every occurrence of `secret` replaced: an error message must not carry the
/// password, whatever a driver put in it.
function redact(text, secret) {
    const s = String(text);
    return secret ? s.split(secret).join('***') : s;
}

// --- The event ---------------------------------------------------------------------------------

const MAX_ACCOUNT_BYTES = 64; // ledger.account is varchar(64)
const MAX_REQUEST_ID_BYTES = 64; // ledger.request_id is varchar(64)
const MAX_WORK_MS = 15 * 60 * 1000; // Lambda's longest timeout

function firstControl(s) {
    for (let i = 0; i < s.length; ++i) {
        const c = s.charCodeAt(i);
        if (c < 0x20 || c === 0x7f) return i;
    }
    return -1;
}

function wholeNumber(v, field) {
    if (typeof v !== 'number' || !Number.isInteger(v)) {
        throw new LedgerError('InvalidEvent', `"${field}" must be a whole number, not ${v === null ? 'null' : typeof v}${typeof v === 'number' ? ' ' + v : ''}`);
    }
    // JSON.parse has already rounded anything beyond 2^53: refused rather than used rounded.
    if (!Number.isSafeInteger(v)) {
        throw new LedgerError('InvalidEvent', `"${field}" is ${v}, beyond the ±${Number.MAX_SAFE_INTEGER} a JavaScript number holds exactly`);
    }
    return v;
}

/// {account, amount, workMs} from the event, checked as examples/lambda's ledger::parse checks
/// it; InvalidEvent otherwise.
function parseEvent(event) {
    if (event === null || typeof event !== 'object' || Array.isArray(event)) {
        throw new LedgerError(
            'InvalidEvent',
            `the event must be a JSON object like {"account":"a1","amount":5}, not ${Array.isArray(event) ? 'array' : event === null ? 'null' : typeof event}`
        );
    }
    const account = event.account;
    if (typeof account !== 'string' || account === '') {
        throw new LedgerError('InvalidEvent', 'the event needs "account": a non-empty string');
    }
    const bytes = Buffer.byteLength(account, 'utf8');
    if (bytes > MAX_ACCOUNT_BYTES) {
        throw new LedgerError('InvalidEvent', `"account" is ${bytes} bytes long; at most ${MAX_ACCOUNT_BYTES} fit`);
    }
    const at = firstControl(account);
    if (at >= 0) {
        throw new LedgerError(
            'InvalidEvent',
            `"account" holds a control character (code ${account.charCodeAt(at)}) at character ${at}; use printable characters only`
        );
    }
    if (!('amount' in event)) {
        throw new LedgerError('InvalidEvent', 'the event needs "amount": a whole number');
    }
    const amount = wholeNumber(event.amount, 'amount');
    let workMs = 0;
    if (event.work_ms !== undefined && event.work_ms !== null) {
        workMs = wholeNumber(event.work_ms, 'work_ms');
        if (workMs < 0 || workMs > MAX_WORK_MS) {
            throw new LedgerError('InvalidEvent', `"work_ms" is ${workMs}; it must be from 0 to ${MAX_WORK_MS}`);
        }
    }
    return { account, amount, workMs };
}

/// The request id is the primary key: checked as examples/lambda checks it.
function checkRequestId(id) {
    const bytes = Buffer.byteLength(id, 'utf8');
    if (bytes > MAX_REQUEST_ID_BYTES) {
        throw new LedgerError('InvalidInvocation', `the request id is ${bytes} bytes long; at most ${MAX_REQUEST_ID_BYTES} fit in ledger.request_id`);
    }
    const at = firstControl(id);
    if (at >= 0) {
        throw new LedgerError('InvalidInvocation', `the request id holds a control character (code ${id.charCodeAt(at)}) at character ${at}`);
    }
}

/// The answer, as examples/lambda gives it: {"account": ..., "balance": ...}.
function answer(account, balance) {
    const n = typeof balance === 'bigint' ? balance : BigInt(balance);
    if (n > BigInt(Number.MAX_SAFE_INTEGER) || n < -BigInt(Number.MAX_SAFE_INTEGER)) {
        throw new LedgerError('InternalError', `the balance of ${account} is ${n}, beyond what a JavaScript number holds exactly; nothing is lost in the table`);
    }
    return { account, balance: Number(n) };
}

/// Whether a second transaction fits before the deadline: the first one's work again, plus
/// the margin examples/lambda keeps (WARMPOOL_DEADLINE_MARGIN_MS' default).
const RETRY_MARGIN_MS = 200;
function timeForRetry(context, workMs) {
    return context.getRemainingTimeInMillis() > workMs + RETRY_MARGIN_MS;
}

function checkStart(context) {
    const left = context.getRemainingTimeInMillis();
    if (left <= 0) {
        throw new LedgerError('DeadlineExceeded', 'the invocation\'s deadline had passed before the handler started; nothing was done');
    }
}

module.exports = {
    LedgerError,
    fleetLog,
    databaseParameters,
    applyParameters,
    wholeSetting,
    readFileSetting,
    redact,
    parseEvent,
    checkRequestId,
    answer,
    timeForRetry,
    checkStart,
};
