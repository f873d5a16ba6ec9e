package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/talonhq/talon/adapters/discord"
	"github.com/talonhq/talon/cluster"
	"github.com/talonhq/talon/cmd/talon/config"
)

// natsReconnectWait is how long a connection that lost its server waits
// before it tries the servers again, and between rounds of tries. The
// client's default, 2 s, is slept before the first try too, so a server
// restarted in 2 s cut every replica off for 2 to 4 s, and a partition's
// lease (renewed each TTL/5, fenced 0.6·TTL after its last renewal) could
// lapse at a short lease_ttl. A try at a server that is down is one refused
// TCP connection.
const natsReconnectWait = 250 * time.Millisecond

// natsConnect connects to the servers of nats.url. Errors never show the
// URL, which may carry a password.
func natsConnect(cfg config.NATS, name string, opts ...nats.Option) (*nats.Conn, error) {
	nc, err := nats.Connect(strings.Join(cfg.Servers(), ","), append([]nats.Option{
		nats.Name(name), nats.Timeout(5 * time.Second), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(false),
		nats.ReconnectWait(natsReconnectWait)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("nats: connect to %s: %w (check nats.url and that nats-server runs with -js)", cfg.Hosts(), scrubURL(err, cfg))
	}
	return nc, nil
}

// scrubURL returns err with nats.url's servers replaced by their hosts.
func scrubURL(err error, cfg config.NATS) error {
	msg := err.Error()
	for _, s := range cfg.Servers() {
		msg = strings.ReplaceAll(msg, s, "the server in nats.url")
	}
	return errors.New(msg)
}

// openCluster joins the deployment when nats.url is set: the runtime then
// hands each accepted message to the node, and runs the turns of the
// partitions this replica holds. It must run before the runtime's Run.
func (a *app) openCluster(ctx context.Context) error {
	nc := a.cfg.NATS
	if !nc.Enabled() {
		return nil
	}
	replica := nc.Replica
	if replica == "" {
		host, _ := os.Hostname()
		replica = cluster.NewReplicaID(host)
	}
	conn, err := natsConnect(nc, "talon "+replica)
	if err != nil {
		return err
	}
	a.closers = append(a.closers, conn.Close)
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	alone := ""
	if a.cfg.Store.Driver != config.StorePostgres {
		// The SQLite file is this replica's own: no other may run beside
		// it. Named by host and data directory, not in clear.
		host, _ := os.Hostname()
		dir, _ := filepath.Abs(a.cfg.DataDir)
		sum := sha256.Sum256([]byte(host + "\x00" + dir))
		alone = hex.EncodeToString(sum[:8])
	}
	tools, err := toolsDigest(a.sandboxTools)
	if err != nil {
		return err
	}
	settings, err := sharedSettings(a.cfg)
	if err != nil {
		return err
	}
	node, err := cluster.Open(octx, conn, cluster.Config{
		Partitions: nc.Partitions, Replica: replica, LeaseTTL: nc.LeaseTTL.Std(), Prefix: nc.Prefix, Alone: alone, Tools: tools,
		Settings: settings,
	}, a.rt, a.db.gatewayStore, a.log)
	if err != nil {
		return err
	}
	a.node = node
	a.closers = append(a.closers, node.Abandon) // a start that fails from here on
	a.rt.Dispatch = node
	a.rt.Limiter = node.Limiter() // agent's turn limits hold across the replicas
	if a.cfg.Discord.Enabled {
		// The shards' liveness probe: a connection of its own on which
		// nothing else flows, to the servers in nats.url's order on every
		// replica, so that their probes meet on one server (cluster.Shards).
		probe, err := natsConnect(nc, "talon "+replica+" probe", nats.DontRandomize())
		if err != nil {
			return err
		}
		a.closers = append(a.closers, probe.Close)
		sh, err := cluster.OpenShards(octx, conn, cluster.ShardsConfig{Replica: replica, LeaseTTL: nc.LeaseTTL.Std(), Prefix: nc.Prefix, Probe: probe}, a.log)
		if err != nil {
			return err
		}
		a.shards = sh
	}
	if a.cfg.Store.Driver != config.StorePostgres {
		a.log.Warn().Msg("nats.url with the SQLite store: no other replica can share this store, so this one runs alone " +
			"(another replica is refused while it runs); replicas share a PostgreSQL store (store.driver: postgres)")
	}
	a.log.Info().Str("replica", replica).Int("partitions", nc.Partitions).Str("nats", nc.Hosts()).
		Msg("cluster: this replica runs the turns of the partitions it holds; every replica must share the store")
	return nil
}

// doctorNATS checks that nats.url reaches a server with JetStream.
func doctorNATS(ctx context.Context, cfg *config.Config, check checkFunc) {
	if !cfg.NATS.Enabled() {
		return
	}
	nc, err := natsConnect(cfg.NATS, "talon doctor")
	if err != nil {
		check("nats", err, "")
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err == nil {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var info *jetstream.AccountInfo
		if info, err = js.AccountInfo(cctx); err != nil {
			err = fmt.Errorf("JetStream is not available on %s: %w (start nats-server with -js)", cfg.NATS.Hosts(), err)
		} else {
			check("nats", nil, fmt.Sprintf(" %s, server %s, JetStream with %d streams", cfg.NATS.Hosts(), nc.ConnectedServerVersion(), info.Streams))
			return
		}
	}
	check("nats", err, "")
}

// appShards hands the Discord adapter the shard leases that openCluster
// opens after the adapter is built (and before it runs).
type appShards struct{ a *app }

var _ discord.ShardClaimer = (*appShards)(nil)

func (s *appShards) get() (*cluster.Shards, error) {
	if s.a.shards == nil {
		return nil, errors.New("the cluster is not open (nats.url)")
	}
	return s.a.shards, nil
}

func (s *appShards) ShardCount(ctx context.Context, want int, adopt bool) (int, error) {
	sh, err := s.get()
	if err != nil {
		return 0, err
	}
	return sh.ShardCount(ctx, want, adopt)
}

func (s *appShards) Serve(ctx context.Context, count int, work func(ctx context.Context, shard int, hold discord.ShardHold)) error {
	sh, err := s.get()
	if err != nil {
		return err
	}
	return sh.Serve(ctx, count, func(ctx context.Context, shard int, h *cluster.ShardHold) { work(ctx, shard, h) })
}

func (s *appShards) Identify(ctx context.Context, bucket int) error {
	sh, err := s.get()
	if err != nil {
		return err
	}
	return sh.Identify(ctx, bucket)
}
