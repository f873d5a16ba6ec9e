package main

import (
	"context"
	"errors"
	"os"

	"github.com/talonhq/talon/adapters/discord"
	"github.com/talonhq/talon/adapters/slack"
	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/cmd/talon/config"
	"github.com/talonhq/talon/console"
	"github.com/talonhq/talon/memory"
	"github.com/talonhq/talon/routines"
	"github.com/talonhq/talon/store"
	"github.com/talonhq/talon/store/postgres"
	"github.com/talonhq/talon/vault"
)

// gatewayStore is what the gateway needs from its database, whichever
// driver serves it: the runtime's interfaces, the threads the channels
// follow and the channels they read back, the deny list (talon user),
// the MCP tools' pins, the memory and the routines, what the console reads
// (console.Store), the MCP authorization flow's state (oauthDB), the
// fencing tokens of the partitions' leases, and a health check. The SQLite store and the PostgreSQL store both implement
// it (store/storetest holds them to the same behaviour).
type gatewayStore interface {
	console.Store
	oauthDB
	agent.Store
	agent.UsageMeter
	agent.UsageLog
	agent.AccessList
	agent.ThreadCursors
	agent.TurnFileStore
	agent.Fencer // the partitions' fencing tokens (cluster)
	slack.FollowStore
	discord.CursorStore
	SeeMCPTool(ctx context.Context, t store.MCPTool) (string, error)
	ApproveMCPTools(ctx context.Context, server string) (int, error)
	MCPTools(ctx context.Context, server string) ([]store.MCPTool, error)
	memoryStore
	routines.Store
	Ping(ctx context.Context) error
	Close() error
}

var (
	_ gatewayStore = (*store.DB)(nil)
	_ gatewayStore = (*postgres.DB)(nil)
)

// memoryStore is the memory's storage and what `talon memory` reads.
type memoryStore interface {
	memory.Store
	GetMemory(ctx context.Context, id int64) (store.Memory, error)
	MemorySpaces(ctx context.Context) ([]store.MemorySpace, error)
}

// openedStore is the configured store, open.
type openedStore struct {
	gatewayStore
	// vault is the vault's storage in it.
	vault vault.Storage
	// pg is the PostgreSQL store; nil on SQLite.
	pg *postgres.DB
}

// lockRuntime takes PostgreSQL's runtime lock for a process that runs
// turns (talon run and chat): shared by the replicas of a deployment,
// exclusive without nats.url, whose process runs, resumes and redelivers
// every session's turns itself (postgres.RuntimeLock). SQLite's data
// directory lock already says as much. If the lock is lost and cannot be
// taken again, the error goes on lost and the process stops.
func (a *app) lockRuntime(ctx context.Context, command string, lost chan<- error) error {
	if a.db.pg == nil {
		return nil
	}
	shared, deployment := a.node != nil, ""
	name := "talon " + command
	if shared {
		name += " replica " + a.node.Replica()
		deployment = a.node.Deployment()
	} else {
		host, _ := os.Hostname()
		name += " without nats.url on " + host
	}
	l, err := a.db.pg.LockRuntime(ctx, shared, deployment, name, func(err error) {
		a.log.Error().Err(err).Msg("the database's runtime lock was lost and is held by another kind of process now: stopping")
		select {
		case lost <- err:
		default:
		}
	})
	if err != nil {
		return err
	}
	a.closers = append(a.closers, l.Close)
	return nil
}

// warmStore readies PostgreSQL's connections for turns (postgres.DB.Warm),
// so that the first messages after a start do not wait for new server
// processes' caches; a failure only costs the first turns some time.
func (a *app) warmStore(ctx context.Context) {
	if a.db.pg == nil {
		return
	}
	if err := a.db.pg.Warm(ctx); err != nil && ctx.Err() == nil {
		a.log.Warn().Err(err).Msg("could not ready the store's connections for turns; the first turns may be slower")
	}
}

// openStore opens the store cfg names: SQLite's file in the data
// directory, or PostgreSQL at store.url.
func openStore(ctx context.Context, cfg *config.Config) (openedStore, error) {
	switch cfg.Store.Driver {
	case config.StorePostgres:
		db, err := postgres.Open(ctx, cfg.Store.URL.Reveal())
		if err != nil {
			return openedStore{}, err
		}
		return openedStore{gatewayStore: db, vault: db.VaultStorage(), pg: db}, nil
	case config.StoreSQLite, "":
		db, err := store.Open(ctx, cfg.DBPath())
		if err != nil {
			return openedStore{}, err
		}
		return openedStore{gatewayStore: db, vault: db.VaultStorage()}, nil
	}
	return openedStore{}, errors.New("store.driver: must be sqlite or postgres")
}
