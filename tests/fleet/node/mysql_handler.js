'use strict';
// The ledger handler (examples/lambda's contract: see ledger_common.js) on serverless-mysql
// 2.1.0 (mysql2 underneath), written the way its README tells users to write one:
//
// * one module-level instance, created outside the handler, so the connection is reused
//   across invocations;
// * the transaction through mysql.transaction().query(...).commit();
// * `await mysql.end()` at the end of every invocation, which does the module's connection
//   management: with more than connUtilization (80 %) of max_connections in use it KILLs other
//   clients' connections idle for long enough, and when there are none it closes its own.
//
// Settings: the module's defaults, all of them (connUtilization 0.8, maxRetries 50 with full
// jitter between 2 and 100 ms, zombieMinTimeout 3 s, zombieMaxTimeout 900 s, maxConnsFreq 15 s,
// usedConnsFreq 0, maxQueryRetries 0); the README asks for nothing else. It does say what the
// database user needs: PROCESS (to see other users' connections), or max_user_connections set
// for it. Only the event callbacks are set, to log what the module does (see fleetLog below);
// they change nothing.
//
// Not added, because the README does not ask for it and the benchmark measures the module as
// it is used: no statement time limit (a statement runs until it ends, the deadline
// notwithstanding) and no handling of a transaction the module's own reconnect split in two.

const common = require('./ledger_common');
const { LedgerError, fleetLog } = common;

// The module's "too many connections" codes, minus its connection-loss ones: these are the
// server refusing a connection for lack of slots.
const TOO_MANY = new Set(['ER_CON_COUNT_ERROR', 'ER_TOO_MANY_USER_CONNECTIONS', 'ER_USER_LIMIT_REACHED']);

// Errors that end the connection (not just the statement): the transaction did not commit, and
// running it again on a fresh connection may succeed (examples/lambda retries the same ones).
const CONNECTION_LOST = new Set([
    'PROTOCOL_CONNECTION_LOST',
    'PROTOCOL_SEQUENCE_TIMEOUT',
    'ECONNRESET',
    'EPIPE',
    'ETIMEDOUT',
    'ER_CONNECTION_KILLED',
    'ER_SERVER_SHUTDOWN',
]);

function connectionLost(e) {
    return e && (e.fatal === true || CONNECTION_LOST.has(e.code));
}

// --- Settings ------------------------------------------------------------------------------

function connectionConfig() {
    const params = common.databaseParameters('mysql');
    const ssl = {};
    const config = common.applyParameters(
        params,
        {
            host: (v, c) => (c.host = v),
            port: (v, c) => (c.port = common.wholeSetting('DATABASE port', v, 1, 65535)),
            db: (v, c) => (c.database = v),
            dbname: (v, c) => (c.database = v),
            service: (v, c) => (c.database = v),
            user: (v, c) => (c.user = v),
            password: (v, c) => (c.password = v),
            pass: (v, c) => (c.password = v),
            unix_socket: (v, c) => (c.socketPath = v),
            charset: (v, c) => (c.charset = v),
            connect_timeout: (v, c) =>
                (c.connectTimeout = 1000 * common.wholeSetting('DATABASE connect_timeout', v, 1, 3600)),
            sslca: (v) => (ssl.ca = common.readFileSetting(v, 'the CA certificate (sslca)')),
            sslcert: (v) => (ssl.cert = common.readFileSetting(v, 'the client certificate (sslcert)')),
            sslkey: (v) => (ssl.key = common.readFileSetting(v, 'the client key (sslkey)')),
        },
        {}
    );
    if (Object.keys(ssl).length > 0) {
        config.ssl = ssl; // as with Connector/C, a CA turns TLS on and verifies the server
    }
    return config;
}

const dbConfig = connectionConfig();
const password = dbConfig.password;

let killed = 0; // KILLs by this instance's end(), logged once end() returns
let lastConnectError = null; // what the last failed connect attempt said
let connected = false; // this instance holds an established connection

const mysql = require('serverless-mysql')({
    config: dbConfig,
    onConnectError: (e) => {
        lastConnectError = e;
        if (TOO_MANY.has(e.code)) fleetLog('too_many_connections');
        fleetLog(`connect_error code=${e.code || 'none'}`);
    },
    onRetry: (e, retries, delay) => {
        if (TOO_MANY.has(e.code)) fleetLog('too_many_connections');
        fleetLog(`connect_retry code=${e.code || 'none'} retry=${retries} delay_ms=${delay}`);
    },
    onConnect: () => {
        connected = true;
        fleetLog('connected');
    },
    // The connection's 'error' event: also fired for a refused connect (counted above), so a
    // lost connection is one that had been established (killed by another instance, or lost).
    onError: (e) => {
        if (connected) fleetLog(`lost_own code=${e.code || 'none'}`);
        connected = false;
    },
    // end() closed this instance's own connection: over the utilization limit, nothing to kill.
    onClose: () => {
        connected = false;
        fleetLog('closed_own');
    },
    onKill: () => ++killed,
    onKillError: (e) => fleetLog(`kill_error code=${e.code || 'none'}`),
});

/// The module's end(), and a line for what it killed. A failure here does not change the
/// invocation's outcome: the transaction is over by then.
async function manageConnections() {
    try {
        await mysql.end();
    } catch (e) {
        fleetLog(`end_error code=${e.code || 'none'}`);
        process.stderr.write(`mysql: end() failed: ${common.redact(e.message, password)}\n`);
    }
    if (killed > 0) {
        fleetLog(`killed ${killed}`);
        killed = 0;
    }
}

/// A connect that failed, after the module's own retries. serverless-mysql throws
/// `new Error(e)` there, which keeps the text but not the code: the code comes from
/// onConnectError.
function connectFailure(e) {
    const cause = lastConnectError;
    const code = cause && cause.code;
    const what = common.redact(cause ? cause.message : e.message, password);
    return new LedgerError(
        TOO_MANY.has(code) ? 'TooManyConnections' : 'ConnectError',
        `connecting to the database failed${code ? ` (${code})` : ''}: ${what}; nothing was committed`
    );
}

// --- Init: the table ---------------------------------------------------------------------------

exports.init = async () => {
    try {
        await mysql.connect();
    } catch (e) {
        throw connectFailure(e);
    }
    // As examples/lambda: utf8mb4 with a binary collation that does not pad (MariaDB 10.2 on:
    // utf8mb4_nopad_bin; MySQL 8.0.17 on: utf8mb4_0900_bin), InnoDB, the index with the table.
    // Several instances starting together may race on CREATE: tried twice.
    for (let attempt = 1; ; ++attempt) {
        try {
            const [{ v }] = await mysql.query('SELECT version() AS v');
            let collation = 'utf8mb4_nopad_bin';
            if (!/mariadb/i.test(v)) {
                const [{ n }] = await mysql.query(
                    "SELECT COUNT(*) AS n FROM information_schema.collations WHERE collation_name = 'utf8mb4_0900_bin'"
                );
                collation = n > 0 ? 'utf8mb4_0900_bin' : 'utf8mb4_bin';
            }
            const text = `varchar(64) character set utf8mb4 collate ${collation}`;
            await mysql.query(
                `create table if not exists ledger (request_id ${text} primary key, account ${text} not null, ` +
                    `amount bigint not null, key ledger_account (account)) engine=InnoDB ` +
                    `default character set utf8mb4 collate ${collation}`
            );
            break;
        } catch (e) {
            if (attempt >= 2) {
                throw new LedgerError('DatabaseError', `creating the table ledger failed: ${common.redact(e.message, password)}`);
            }
        }
    }
    await manageConnections();
};

// --- One invocation ------------------------------------------------------------------------

const BALANCE = 'SELECT CAST(COALESCE(SUM(amount), 0) AS SIGNED) AS balance FROM ledger WHERE account = ?';

/// Whether this request's row is committed, and the account's balance, in one statement (one
/// snapshot).
async function lookUp(requestId, account) {
    const [row] = await mysql.query(
        'SELECT (SELECT COUNT(*) FROM ledger WHERE request_id = ?) AS n, ' +
            '(SELECT CAST(COALESCE(SUM(amount), 0) AS SIGNED) FROM ledger WHERE account = ?) AS balance',
        [requestId, account]
    );
    return { exists: Number(row.n) > 0, balance: row.balance };
}

/// One transaction: {state: 'committed', balance} | {state: 'duplicate'} |
/// {state: 'lost', error} (nothing committed, the connection broke) |
/// {state: 'commit_unknown', error}. Other failures throw.
async function postEntry(requestId, e) {
    let beforeCommit = null; // set by the module when a statement inside failed (it rolled back)
    let reachedCommit = false;
    try {
        const results = await mysql
            .transaction()
            .query('INSERT INTO ledger (request_id, account, amount) VALUES (?, ?, ?)', [requestId, e.account, e.amount])
            // A stand-in for work that keeps the transaction open (examples/lambda: SLEEP).
            .query(() => (e.workMs > 0 ? ['DO SLEEP(?)', [e.workMs / 1000]] : null))
            .query(BALANCE, [e.account])
            // Not a statement: marks that every statement before COMMIT succeeded.
            .query(() => {
                reachedCommit = true;
                return null;
            })
            .rollback((err) => (beforeCommit = err))
            .commit();
        return { state: 'committed', balance: results[2][0].balance };
    } catch (err) {
        if (beforeCommit !== null || !reachedCommit) {
            if (err.errno === 1062 || err.code === 'ER_DUP_ENTRY') {
                return { state: 'duplicate' };
            }
            if (connectionLost(err)) {
                return { state: 'lost', error: err };
            }
            throw err; // the server refused a statement; the module rolled back
        }
        return { state: 'commit_unknown', error: err };
    }
}

function databaseError(what, err) {
    return new LedgerError('DatabaseError', `${what}: ${common.redact(err.message, password)}${err.code ? ` (${err.code})` : ''}`);
}

async function ledger(requestId, e, context) {
    for (let attempt = 1; ; ++attempt) {
        const r = await postEntry(requestId, e);
        // Once, and only when the whole transaction fits again before the deadline.
        const mayRetry = () => attempt === 1 && common.timeForRetry(context, e.workMs);
        switch (r.state) {
            case 'committed':
                if (attempt > 1) fleetLog('committed_on_retry');
                return common.answer(e.account, r.balance);
            case 'duplicate': {
                // A redelivery: the first delivery's row stands. The row itself is the proof.
                fleetLog('redelivery');
                let found;
                try {
                    found = await lookUp(requestId, e.account);
                } catch (err) {
                    throw databaseError('this request id committed before (a redelivery), but reading the balance failed', err);
                }
                if (!found.exists) {
                    throw new LedgerError('DatabaseError', 'the insert was refused as a duplicate request id, but no row with this request id is committed; nothing was committed');
                }
                return common.answer(e.account, found.balance);
            }
            case 'lost':
                if (mayRetry()) {
                    fleetLog('retry reason=lost_before_commit');
                    continue;
                }
                throw databaseError(`the connection was lost before COMMIT on transaction ${attempt}; nothing was committed`, r.error);
            case 'commit_unknown': {
                let found;
                try {
                    found = await lookUp(requestId, e.account);
                } catch (err) {
                    throw databaseError(`COMMIT failed (${common.redact(r.error.message, password)}) and checking whether it took effect failed too; retrying with the same request id is safe`, err);
                }
                if (found.exists) {
                    return common.answer(e.account, found.balance);
                }
                if (mayRetry()) {
                    fleetLog('retry reason=commit_failed');
                    continue;
                }
                throw databaseError(`COMMIT failed on transaction ${attempt}; nothing was committed`, r.error);
            }
        }
    }
}

exports.handler = async (event, context) => {
    common.checkStart(context);
    common.checkRequestId(context.awsRequestId);
    const e = common.parseEvent(event);
    try {
        // Not needed (query() connects), but it tells a failed connect from a failed statement.
        try {
            lastConnectError = null;
            await mysql.connect();
        } catch (err) {
            throw connectFailure(err);
        }
        try {
            return await ledger(context.awsRequestId, e, context);
        } catch (err) {
            if (err instanceof LedgerError) throw err;
            // A connect inside the transaction (the module reconnects after a lost connection).
            if (lastConnectError !== null && /^Error: /.test(err.message)) throw connectFailure(err);
            throw databaseError('the database refused a statement; nothing was committed', err);
        }
    } finally {
        await manageConnections();
    }
};
