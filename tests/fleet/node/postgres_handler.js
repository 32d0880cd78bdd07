'use strict';
// The ledger handler (examples/lambda's contract: see ledger_common.js) on serverless-postgres
// 2.1.2 (node-postgres underneath), written the way its README tells users to write one:
//
// * one ServerlessClient declared outside the handler;
// * `await client.connect()` at the start of every invocation (a no-op while connected), the
//   queries, then `await client.clean()` at the end, which does the module's connection
//   management: with more than connUtilization (80 %) of maxConnections held by connections
//   with its application_name (same user and database), it terminates those idle for longer
//   than minConnectionIdleTimeSec (0.5 s).
//
// Settings, and why:
// * maxConnections: the README: "it should be set equal to max_connections in your cluster. I
//   highly suggest to set this yourself". Taken from SERVERLESS_PG_MAX_CONNECTIONS, which the
//   deployer (the benchmark driver) sets to the server's max_connections. Unset, the handler
//   sets manualMaxConnections: true instead, the README's other way: the module then asks the
//   server (SHOW max_connections, cached for maxConnsFreqMs, 60 s). Its default of 100 is
//   never used: it would be wrong for any server not configured with exactly 100.
// * application_name: left at the module's default, serverless_client. The README: every
//   serverless client gets the same name by default, and the module only ever terminates
//   connections with its own name, so all the function's instances clean up after each other.
// * everything else at its default: strategy minimum_idle_time, minConnectionIdleTimeSec 0.5,
//   maxIdleConnectionsToKill null (all), connUtilization 0.8, maxRetries 3, delayMs 1000,
//   capMs 1000, baseMs 2, processCountCacheEnabled false, debug false (its log lines are not
//   needed: clean() returns what it terminated, and the events below are logged).
// * library: node-postgres itself, through a subclass of its Client that only logs (fleetLog)
//   connects, refused connects and the connection's errors; it changes no behaviour. The
//   README lists `library` as the way to give the module a custom pg.
//
// The transaction is BEGIN ... COMMIT with ROLLBACK on failure, node-postgres' documented
// pattern (the module has no transaction helper).
//
// Not added, because the README does not ask for it and the benchmark measures the module as
// it is used: no statement_timeout (a statement runs until it ends, the deadline
// notwithstanding), no connect timeout, and no handling of a transaction the module's own
// reconnect-and-retry split in two.

const pg = require('pg');
const ServerlessClient = require('serverless-postgres');
const common = require('./ledger_common');
const { LedgerError, fleetLog } = common;

const TOO_MANY_CONNECTIONS = '53300'; // "sorry, too many clients already", "remaining connection slots are reserved ..."

/// The connection ended, not just the statement: node's own errors (no SQLSTATE), class 08
/// (connection exception), and the server ending the session (57P01-57P03). The transaction
/// did not commit, and examples/lambda runs it again on a fresh connection.
function connectionLost(e) {
    const code = e && e.code;
    return !/^[0-9A-Z]{5}$/.test(code || '') || code.startsWith('08') || /^57P0[123]$/.test(code);
}

// --- Settings ------------------------------------------------------------------------------

function connectionConfig() {
    const params = common.databaseParameters('postgresql');
    let sslmode = 'prefer';
    const files = {};
    const config = common.applyParameters(
        params,
        {
            host: (v, c) => (c.host = v),
            hostaddr: (v, c) => (c.host = v),
            port: (v, c) => (c.port = common.wholeSetting('DATABASE port', v, 1, 65535)),
            dbname: (v, c) => (c.database = v),
            user: (v, c) => (c.user = v),
            password: (v, c) => (c.password = v),
            application_name: (v, c) => (c.application_name = v),
            connect_timeout: (v, c) =>
                (c.connectionTimeoutMillis = 1000 * common.wholeSetting('DATABASE connect_timeout', v, 1, 3600)),
            sslmode: (v) => {
                if (!['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'].includes(v)) {
                    throw new LedgerError('InvalidConfiguration', `DATABASE: sslmode "${v}" is not one of disable, allow, prefer, require, verify-ca, verify-full`);
                }
                sslmode = v;
            },
            sslrootcert: (v) => (files.ca = common.readFileSetting(v, 'the CA certificate (sslrootcert)')),
            sslcert: (v) => (files.cert = common.readFileSetting(v, 'the client certificate (sslcert)')),
            sslkey: (v) => (files.key = common.readFileSetting(v, 'the client key (sslkey)')),
        },
        {}
    );
    // node-postgres has no "try TLS, fall back to plain": allow and prefer (libpq's default)
    // connect without TLS, as node-postgres does by default.
    if (sslmode === 'require') {
        config.ssl = Object.assign({ rejectUnauthorized: false }, files);
    } else if (sslmode === 'verify-ca') {
        config.ssl = Object.assign({ checkServerIdentity: () => undefined }, files);
    } else if (sslmode === 'verify-full') {
        config.ssl = Object.assign({}, files);
    }
    return config;
}

/// node-postgres' Client, observed: every connect, refused connect and connection error leaves
/// a fleetLog line. Behaviour is node-postgres' own.
class ObservedClient extends pg.Client {
    constructor(config) {
        super(config);
        // Registered before the module's own listener, so it is seen even when that one
        // rethrows (which ends the process: see runtime.js). Once per connection: a terminated
        // one reports the server's 57P01 and then "Connection terminated unexpectedly".
        let lost = false;
        this.on('error', (e) => {
            if (!lost) fleetLog(`lost_own code=${e.code || 'none'}`);
            lost = true;
        });
    }

    async connect(...args) {
        if (args.length > 0) {
            return super.connect(...args); // the callback form, which the module does not use
        }
        try {
            await super.connect();
        } catch (e) {
            if (e.code === TOO_MANY_CONNECTIONS) fleetLog('too_many_connections');
            fleetLog(`connect_error code=${e.code || 'none'}`);
            throw e;
        }
        fleetLog('connected');
    }
}

const dbConfig = connectionConfig();
const password = dbConfig.password;

function managementSettings() {
    const max = process.env.SERVERLESS_PG_MAX_CONNECTIONS;
    if (max) {
        return { maxConnections: common.wholeSetting('SERVERLESS_PG_MAX_CONNECTIONS', max, 1, 262143) };
    }
    return { manualMaxConnections: true };
}

const client = new ServerlessClient(
    Object.assign({}, dbConfig, managementSettings(), { library: Object.assign({}, pg, { Client: ObservedClient }) })
);

/// The module's clean(), and a line for what it terminated. A failure here does not change
/// the invocation's outcome: the transaction is over by then.
async function manageConnections() {
    try {
        const killed = await client.clean();
        if (killed && killed.length > 0) {
            fleetLog(`killed ${killed.length}`);
        }
    } catch (e) {
        fleetLog(`clean_error code=${e.code || 'none'}`);
        process.stderr.write(`postgres: clean() failed: ${common.redact(e.message, password)}\n`);
    }
}

function connectFailure(e) {
    return new LedgerError(
        e.code === TOO_MANY_CONNECTIONS ? 'TooManyConnections' : 'ConnectError',
        `connecting to the database failed${e.code ? ` (${e.code})` : ''}: ${common.redact(e.message, password)}; nothing was committed`
    );
}

function databaseError(what, err) {
    return new LedgerError('DatabaseError', `${what}: ${common.redact(err.message, password)}${err.code ? ` (${err.code})` : ''}`);
}

// --- Init: the table ---------------------------------------------------------------------------

exports.init = async () => {
    try {
        await client.connect();
    } catch (e) {
        throw connectFailure(e);
    }
    // As examples/lambda: one transaction (which keeps the "already exists" notices out), tried
    // twice, since instances starting together race on CREATE ... IF NOT EXISTS.
    for (let attempt = 1; ; ++attempt) {
        try {
            await client.query('BEGIN');
            await client.query('SET LOCAL client_min_messages = warning');
            await client.query(
                'create table if not exists ledger (request_id varchar(64) primary key, ' +
                    'account varchar(64) not null, amount bigint not null)'
            );
            await client.query('create index if not exists ledger_account on ledger (account)');
            await client.query('COMMIT');
            break;
        } catch (e) {
            await rollback();
            if (attempt >= 2) {
                throw databaseError('creating the table ledger failed', e);
            }
        }
    }
    await manageConnections();
};

// --- One invocation ------------------------------------------------------------------------

async function rollback() {
    try {
        await client.query('ROLLBACK');
    } catch (e) {
        // The connection is gone, which rolls back too.
    }
}

const BALANCE = 'SELECT CAST(COALESCE(SUM(amount), 0) AS bigint) AS balance FROM ledger WHERE account = $1';

/// Whether this request's row is committed, and the account's balance, in one statement (one
/// snapshot).
async function lookUp(requestId, account) {
    const r = await client.query(
        'SELECT (SELECT COUNT(*) FROM ledger WHERE request_id = $1) AS n, ' +
            '(SELECT CAST(COALESCE(SUM(amount), 0) AS bigint) FROM ledger WHERE account = $2) AS balance',
        [requestId, account]
    );
    return { exists: Number(r.rows[0].n) > 0, balance: BigInt(r.rows[0].balance) };
}

/// One transaction: {state: 'committed', balance} | {state: 'duplicate'} |
/// {state: 'lost', error} (nothing committed, the connection broke) |
/// {state: 'commit_unknown', error}. Other failures throw.
async function postEntry(requestId, e) {
    let balance;
    try {
        await client.query('BEGIN');
        try {
            await client.query('INSERT INTO ledger (request_id, account, amount) VALUES ($1, $2, $3)', [
                requestId,
                e.account,
                e.amount,
            ]);
        } catch (err) {
            if (err.code === '23505') {
                await rollback();
                return { state: 'duplicate' };
            }
            throw err;
        }
        if (e.workMs > 0) {
            // A stand-in for work that keeps the transaction open (examples/lambda: pg_sleep).
            await client.query('SELECT pg_sleep($1)', [e.workMs / 1000]);
        }
        const r = await client.query(BALANCE, [e.account]);
        balance = BigInt(r.rows[0].balance);
    } catch (err) {
        await rollback();
        if (connectionLost(err)) {
            return { state: 'lost', error: err };
        }
        throw err;
    }
    try {
        await client.query('COMMIT');
    } catch (err) {
        return { state: 'commit_unknown', error: err };
    }
    return { state: 'committed', balance };
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
                    // A fresh connection: the module reconnects only when its client is gone.
                    await connect();
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

async function connect() {
    try {
        await client.connect();
    } catch (err) {
        throw connectFailure(err);
    }
}

exports.handler = async (event, context) => {
    common.checkStart(context);
    common.checkRequestId(context.awsRequestId);
    const e = common.parseEvent(event);
    try {
        await connect();
        try {
            return await ledger(context.awsRequestId, e, context);
        } catch (err) {
            if (err instanceof LedgerError) throw err;
            throw databaseError('the database refused a statement; nothing was committed', err);
        }
    } finally {
        await manageConnections();
    }
};
