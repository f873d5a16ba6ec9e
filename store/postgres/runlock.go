package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// runtimeLockClass is the first key of the runtime lock ("talr"); the
// second is a hash of the schema, so that deployments in other schemas of
// the same database do not meet.
const runtimeLockClass = 0x74616c72

// ErrRuntimeLocked means that another process runs turns on this
// database's schema in the other way: replicas of a deployment (nats.url)
// against a process that runs every session's turns itself, or two of the
// latter.
var ErrRuntimeLocked = errors.New("postgres: another Talon process runs turns on this database")

// RuntimeLock is held, on a connection of its own, for as long as a
// process runs turns on the database: shared by the replicas of a
// deployment, whose turns NATS spreads over them, and exclusive for a
// process without nats.url, which runs, resumes and redelivers every
// session's turns and replies itself. Two such processes, or one beside a
// deployment, would both run the same turns: tool calls twice, replies
// shown twice. With SQLite the data directory's file lock says the same.
//
// PostgreSQL releases the lock when the process's connection ends: at
// once when the process dies, and within about a minute for a host that
// is lost (the connection asks the server for TCP keepalives every 10 s
// after 30 s of silence).
type RuntimeLock struct {
	cfg    *pgx.ConnConfig
	shared bool
	// deployment names a replica's deployment (its NATS server and
	// prefix); "" for none.
	deployment string
	every      time.Duration // runtimeLockEvery when it was taken
	stop       context.CancelFunc
	done       chan struct{}
	// conn holds the lock: keep's until done is closed, then Close's.
	conn *pgx.Conn
}

// LockRuntime takes the runtime lock, shared or exclusive, and keeps it:
// when its connection is lost it connects again and takes it again, and
// calls lost (once, from another goroutine) if it is then refused. name
// shows in pg_stat_activity (application_name) and in the error another
// process gets. A replica (shared) names its deployment, the NATS server
// and prefix its turns are spread on, so that two deployments on one
// database, which would both run its sessions' turns, are told apart. It
// fails with an error wrapping ErrRuntimeLocked, naming the holders it can
// see, when the lock is held the other way or by another deployment.
func (db *DB) LockRuntime(ctx context.Context, shared bool, deployment, name string, lost func(error)) (*RuntimeLock, error) {
	cfg := db.pool.Config().ConnConfig.Copy()
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["application_name"] = name
	// The server's keepalives on this connection, so that a lost host's
	// lock is released within about a minute (30 + 3 × 10 s), not the
	// system default's two hours. Ignored on a Unix socket.
	cfg.RuntimeParams["tcp_keepalives_idle"] = "30"
	cfg.RuntimeParams["tcp_keepalives_interval"] = "10"
	cfg.RuntimeParams["tcp_keepalives_count"] = "3"
	l := &RuntimeLock{cfg: cfg, shared: shared, deployment: deployment, every: runtimeLockEvery, done: make(chan struct{})}
	conn, err := l.take(ctx)
	if err != nil {
		return nil, err
	}
	l.conn = conn
	kctx, stop := context.WithCancel(context.Background())
	l.stop = stop
	go l.keep(kctx, lost)
	return l, nil
}

// take connects and takes the lock on the new connection.
func (l *RuntimeLock) take(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, l.cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: runtime lock: connect: %w", scrub(err))
	}
	if err := l.takeOn(ctx, conn); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return conn, nil
}

// takeOn takes the lock on conn: the runtime lock, and for a replica its
// deployment's, checking that no other deployment's is held.
func (l *RuntimeLock) takeOn(ctx context.Context, conn *pgx.Conn) error {
	try := `SELECT pg_try_advisory_lock($1, hashtext(current_schema()))`
	if l.shared {
		try = `SELECT pg_try_advisory_lock_shared($1, hashtext(current_schema()))`
	}
	var ok bool
	if err := conn.QueryRow(ctx, try, int32(runtimeLockClass)).Scan(&ok); err != nil {
		return fmt.Errorf("postgres: runtime lock: %w", scrub(err))
	}
	if !ok {
		holders := runtimeHolders(ctx, conn)
		if holders == "" {
			holders = "held by a process that has just stopped: start again"
		}
		why := "a process without nats.url runs every session's turns itself, so nothing else may run turns here"
		if !l.shared {
			why = "replicas of a deployment (nats.url) or another process without nats.url run turns here"
		}
		return fmt.Errorf("%w (%s): %s. Two would run the same turns: tool calls twice, replies shown twice. "+
			"Give every process that shares this database the same nats.url, or run only one without it", ErrRuntimeLocked, holders, why)
	}
	if !l.shared || l.deployment == "" {
		return nil
	}
	// The deployment's lock: the first key names the schema, the second
	// the deployment; a key of the schema with another second key is
	// another deployment's replica.
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock_shared(hashtext('talon deployment ' || current_schema()), hashtext($1))`, l.deployment); err != nil {
		return fmt.Errorf("postgres: runtime lock: %w", scrub(err))
	}
	others := lockHolders(ctx, conn, `l.classid = (hashtext('talon deployment ' || current_schema())::bigint & 4294967295)::oid
		AND l.objid <> (hashtext($1)::bigint & 4294967295)::oid`, l.deployment)
	if others == "" {
		return nil
	}
	return fmt.Errorf("%w (%s): the replicas of another deployment, on another NATS server or nats.prefix. Both would run the same turns: "+
		"tool calls twice, replies shown twice. Give every replica that shares this database the same nats.url and nats.prefix, "+
		"or each deployment its own database or schema. (If it is this deployment and its NATS server lost its data, which made "+
		"the lease bucket anew, restart every replica.)", ErrRuntimeLocked, others)
}

// runtimeHolders names the holders of the runtime lock (lockHolders).
func runtimeHolders(ctx context.Context, conn *pgx.Conn) string {
	return lockHolders(ctx, conn, `l.classid = $1::bigint::oid AND l.objid = (hashtext(current_schema())::bigint & 4294967295)::oid`, int64(runtimeLockClass))
}

// lockHolders names the sessions that hold the advisory locks cond
// selects (over pg_locks l), as far as this role may see them: "held by
// …", or "" when there are none.
func lockHolders(ctx context.Context, conn *pgx.Conn, cond string, args ...any) string {
	rows, err := conn.Query(ctx, `SELECT coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local'), l.mode
		FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.pid <> pg_backend_pid()
		  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND `+cond, args...)
	if err != nil {
		return "held by a process this role cannot see"
	}
	defer rows.Close()
	var who []string
	for rows.Next() {
		var app, addr, mode string
		if err := rows.Scan(&app, &addr, &mode); err != nil {
			return "held by a process this role cannot see"
		}
		if app == "" {
			app = "a session this role cannot see"
		}
		kind := "exclusive"
		if mode == "ShareLock" {
			kind = "shared"
		}
		who = append(who, fmt.Sprintf("%q from %s, %s", app, addr, kind))
	}
	if rows.Err() != nil {
		return "held by a process this role cannot see"
	}
	if len(who) == 0 {
		return ""
	}
	return "held by " + strings.Join(who, "; ")
}

// runtimeLockEvery is how often the lock's connection is checked; once
// lost, it is tried again every fifth of it (tests shorten it).
var runtimeLockEvery = 10 * time.Second

// keep checks the connection every l.every; when it is lost, it connects
// again (every l.every/5) and takes the lock again, and calls lost if that
// is refused.
func (l *RuntimeLock) keep(ctx context.Context, lost func(error)) {
	defer close(l.done)
	t := time.NewTicker(l.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := l.conn.Ping(pctx)
		cancel()
		if err == nil || ctx.Err() != nil {
			continue
		}
		l.conn.Close(context.Background())
		l.conn = nil
		var conn *pgx.Conn
		for {
			tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			conn, err = l.take(tctx)
			cancel()
			if err == nil || ctx.Err() != nil {
				break
			}
			if errors.Is(err, ErrRuntimeLocked) {
				if lost != nil {
					lost(err)
				}
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(l.every / 5):
			}
		}
		if conn == nil {
			return
		}
		l.conn = conn // Close closes it if ctx has ended
	}
}

// Close releases the lock, then ends its connection. The release is a
// statement answered before Close returns: a connection's end alone
// frees the lock only once the server's backend has exited, after Close
// returned, and a process started right after could find it still held.
func (l *RuntimeLock) Close() {
	l.stop()
	<-l.done
	if l.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _ = l.conn.Exec(ctx, `SELECT pg_advisory_unlock_all()`)
		cancel()
		l.conn.Close(context.Background())
		l.conn = nil
	}
}
