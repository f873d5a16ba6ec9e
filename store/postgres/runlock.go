package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
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
	every  time.Duration // runtimeLockEvery when it was taken
	stop   context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	conn *pgx.Conn // guarded by mu
}

// LockRuntime takes the runtime lock, shared or exclusive, and keeps it:
// when its connection is lost it connects again and takes it again, and
// calls lost (once, from another goroutine) if it is then refused. name
// shows in pg_stat_activity (application_name) and in the error another
// process gets. It fails with an error wrapping ErrRuntimeLocked, naming
// the holders it can see, when the lock is held the other way.
func (db *DB) LockRuntime(ctx context.Context, shared bool, name string, lost func(error)) (*RuntimeLock, error) {
	cfg := db.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = name
	// The server's keepalives on this connection, so that a lost host's
	// lock is released within about a minute (30 + 3 × 10 s), not the
	// system default's two hours. Ignored on a Unix socket.
	cfg.RuntimeParams["tcp_keepalives_idle"] = "30"
	cfg.RuntimeParams["tcp_keepalives_interval"] = "10"
	cfg.RuntimeParams["tcp_keepalives_count"] = "3"
	l := &RuntimeLock{cfg: cfg, shared: shared, every: runtimeLockEvery, done: make(chan struct{})}
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
	try := `SELECT pg_try_advisory_lock($1, hashtext(current_schema()))`
	if l.shared {
		try = `SELECT pg_try_advisory_lock_shared($1, hashtext(current_schema()))`
	}
	var ok bool
	if err := conn.QueryRow(ctx, try, int32(runtimeLockClass)).Scan(&ok); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("postgres: runtime lock: %w", scrub(err))
	}
	if ok {
		return conn, nil
	}
	holders := lockHolders(ctx, conn)
	conn.Close(context.WithoutCancel(ctx))
	why := "a process without nats.url runs every session's turns itself, so nothing else may run turns here"
	if !l.shared {
		why = "replicas of a deployment (nats.url) or another process without nats.url run turns here"
	}
	return nil, fmt.Errorf("%w (%s): %s. Two would run the same turns: tool calls twice, replies shown twice. "+
		"Give every process that shares this database the same nats.url, or run only one without it", ErrRuntimeLocked, holders, why)
}

// lockHolders names the sessions that hold the runtime lock, as far as
// this role may see them.
func lockHolders(ctx context.Context, conn *pgx.Conn) string {
	rows, err := conn.Query(ctx, `SELECT coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local'), l.mode
		FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND l.classid = $1::bigint::oid AND l.objid = (hashtext(current_schema())::bigint & 4294967295)::oid AND l.objsubid = 2`,
		int64(runtimeLockClass))
	if err != nil {
		return "held by a process this role cannot see"
	}
	var who []string
	for rows.Next() {
		var app, addr, mode string
		if rows.Scan(&app, &addr, &mode) == nil {
			if app == "" {
				app = "a session this role cannot see"
			}
			kind := "exclusive"
			if mode == "ShareLock" {
				kind = "shared"
			}
			who = append(who, fmt.Sprintf("%q from %s, %s", app, addr, kind))
		}
	}
	if rows.Err() != nil || len(who) == 0 {
		return "held by a process this role cannot see"
	}
	return "held by " + strings.Join(who, "; ")
}

// runtimeLockEvery is how often the lock's connection is checked, and
// twice how often it is tried again once lost (tests shorten it).
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
		l.mu.Lock()
		conn := l.conn
		l.mu.Unlock()
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := conn.Ping(pctx)
		cancel()
		if err == nil || ctx.Err() != nil {
			continue
		}
		conn.Close(context.Background())
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
		if ctx.Err() != nil {
			conn.Close(context.Background())
			return
		}
		l.mu.Lock()
		l.conn = conn
		l.mu.Unlock()
	}
}

// Close releases the lock (its connection ends).
func (l *RuntimeLock) Close() {
	l.stop()
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		l.conn.Close(context.Background())
		l.conn = nil
	}
}
