package discord

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"

	"github.com/talonhq/talon/adapters/internal/chat"
	"github.com/talonhq/talon/adapters/internal/follow"
	"github.com/talonhq/talon/agent"
)

// Runtime is what the adapter needs from the agent runtime (*agent.Runtime
// implements it).
type Runtime interface {
	// Accept persists an inbound message before anything else happens to
	// it; agent.ErrDuplicate means it was seen before.
	Accept(ctx context.Context, in agent.Inbound) (agent.QueuedInbound, error)
	// Decide records an approval click by its clicker.
	Decide(ctx context.Context, id agent.ApprovalID, by agent.Principal, approve bool) (agent.ApprovalState, error)
	// Amend changes or cancels a message whose turn has not started.
	Amend(ctx context.Context, dedupeKey string, a agent.Amendment) (bool, error)
	// Previewed records the message posted to show a streamed answer, so
	// that the reply's delivery edits it, after a restart too.
	Previewed(ctx context.Context, id agent.InboundID, platformID string) error
}

// FollowStore remembers the threads the bot follows for a user (where they
// mentioned it: Config.FollowThreads), so that a restart does not forget
// them; *store.DB implements it.
type FollowStore = follow.Store

// CursorStore remembers, across restarts, the channels the adapter reads
// back after a gap (Config.BackfillWindow) and the newest message seen in
// each, so that messages sent while Talon was stopped are answered at the
// next start; *store.DB implements it. Ids compare as Discord snowflakes:
// by length, then bytes.
type CursorStore interface {
	// SaveChannelCursor records that lastID is the newest message seen in
	// channel (of workspace, "" for a DM) at at. A row moves forward only:
	// an older id or time never replaces a newer one.
	SaveChannelCursor(ctx context.Context, platform, workspace, channel, lastID string, at time.Time) error
	// ChannelCursors calls fn for platform's channels, the most recently
	// active first, at most limit of them.
	ChannelCursors(ctx context.Context, platform string, limit int, fn func(workspace, channel, lastID string, at time.Time)) error
	// ForgetChannelCursors forgets platform's channels active before
	// before, then all but the keep most recently active, and returns how
	// many it forgot.
	ForgetChannelCursors(ctx context.Context, platform string, before time.Time, keep int) (int, error)
}

// Platform is the Principal.Platform of Discord users.
const Platform = "discord"

// Adapter is the Discord channel. Set the fields, register it with the
// runtime, then call Run. Deliver, AskApproval and the other channel
// methods wait until Run has started.
type Adapter struct {
	// Config is validated in Run; start from DefaultConfig.
	Config Config
	// Runtime receives messages and approval decisions; required.
	Runtime Runtime
	// Secrets stores what a user enters in the /talon secret-add modal; nil
	// means the vault is not configured and users are told so.
	Secrets agent.Secrets
	// Follows remembers the threads followed across restarts; nil keeps
	// them in memory only, so that after a restart a follow-up needs a new
	// mention.
	Follows FollowStore
	// Cursors remembers the channels to read back and the newest message
	// seen in each, across restarts; nil keeps them in memory only, so
	// that messages sent while Talon was stopped are not answered.
	Cursors CursorStore
	// Log receives operational events: ids and outcomes, never message
	// bodies, tokens or secret values.
	Log zerolog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// OnState, when set, is told the gateway connection's state as it
	// changes: "connecting", "connected", "connected (resumed)",
	// "reconnecting" or "reconnecting (resuming)". It must not block.
	OnState func(state string)
	// HTTPClient makes the REST calls; nil means a client with a 20 s
	// timeout.
	HTTPClient *http.Client
	// APIBase, when set (tests: "http://127.0.0.1:PORT"), receives every
	// REST request meant for https://discord.com. The gateway URL comes
	// from GET /gateway, so a fake that answers it serves the socket too.
	APIBase string

	// Shards, when set, decides which gateway shards this process
	// connects, and when each may identify (cluster.Shards, across the
	// replicas of a deployment). nil: this process connects every shard
	// of Config.Shards.
	Shards ShardClaimer

	// Tuning that tests shorten; zero means the constant of the same name.
	reconnectBase, reconnectMax, stableAfter time.Duration
	identifyEvery                            time.Duration // 0: identifyEvery
	maxFrame                                 int64         // 0: maxGatewayFrame
	flushEvery                               time.Duration
	maxTold                                  int // people remembered as told a refusal (0: 10,000)

	once    sync.Once
	started chan struct{} // closed when Run has built the session (or failed to)

	// Set before started is closed, read-only after.
	cfg  Config
	sess *discordgo.Session
	// isess answers interactions (callbacks, the deferred answer's edit,
	// follow-ups) with a rate limiter of its own: Discord's global rate
	// limit does not apply to these endpoints, but discordgo holds every
	// request of a session while a global 429 lasts, past the 3 s an
	// interaction has to be answered in.
	isess    *discordgo.Session
	gw       *gateway // the one connection when not sharded
	startErr error
	// sharded: the gateway is split into shards (Config.Shards is not 1,
	// or Shards is set); shardStates then holds each connected or
	// connecting shard's state, for OnState. Guarded by mu.
	sharded     bool
	shardCount  int
	shardStates map[int]string
	dispatchMu  sync.Mutex      // serialises the dispatch of every shard's events
	runCtx      context.Context // cancelled when Run returns

	// bg counts the goroutines Run waits for: interaction answers, refusal
	// notices, command registration, backfill and cursor flushes.
	bg               sync.WaitGroup
	interactionSlots chan struct{} // bounds the interactions answered at once
	refusalSlots     chan struct{} // bounds the refusal notices in flight
	backfillReq      chan struct{} // a gap to read back (capacity 1)
	flushReq         chan struct{} // a new channel to save (capacity 1)

	mu           sync.Mutex
	botID        string                      // guarded by mu
	appID        string                      // guarded by mu
	commandsDone bool                        // guarded by mu
	gapSince     time.Time                   // when the unread gap began; zero: none; guarded by mu
	pendingGuild map[string]bool             // guilds announced by READY, not yet created; guarded by mu
	guildsReady  chan struct{}               // closed when pendingGuild empties; guarded by mu
	active       map[string]*activity        // channel id → recent activity; guarded by mu
	dirty        map[string]activity         // cursors not saved yet, by channel; guarded by mu
	interactions map[string]interactionToken // deferred /talon commands, by interaction id; guarded by mu
	threads      map[string]*threadStart     // threads to start, by message id; guarded by mu
	threadOrder  []string                    // keys of threads, oldest first; guarded by mu
	// refs: message id → the id of the message it replies to ("" for
	// none), for the messages accepted by this process, so that reading a
	// thread (history.go) asks Discord only for what it needs. Guarded by
	// mu.
	refs map[string]string

	follows  *follow.Set           // threads followed for a user; Follows behind it
	streams  *chat.Streams[stream] // answers being streamed; Interval set by setup
	refusals *chat.Refusals        // whom a refusal was told, and notices per channel
}

type activity struct {
	guild  string
	lastID string    // newest message id seen in the channel
	at     time.Time // when it was seen
}

type interactionToken struct {
	appID, token string
	expires      time.Time
}

type msgRef struct{ channel, message string }

var (
	_ agent.Channel       = (*Adapter)(nil)
	_ agent.Asker         = (*Adapter)(nil)
	_ agent.Typer         = (*Adapter)(nil)
	_ agent.Streamer      = (*Adapter)(nil)
	_ agent.CommandSyntax = (*Adapter)(nil)
)

// Platform returns "discord".
func (a *Adapter) Platform() string { return Platform }

// Bounds of the work the adapter does for events, besides turns.
const (
	// maxInteractions bounds the interactions answered at once; beyond
	// it one is left unanswered (and logged) rather than queued.
	maxInteractions = 64
	// maxRefusals bounds the refusal notices in flight; beyond it they are
	// dropped.
	maxRefusals = 8
	// maxActive bounds the channels remembered for backfill.
	maxActive = 1000
	// flushEvery is how often new cursors are saved to Cursors (a new
	// channel is saved at once).
	flushEvery = time.Second
	// guildWait bounds how long a backfill waits for the guilds announced
	// by READY (their channels tell threads from channels).
	guildWait = 10 * time.Second
)

func (a *Adapter) init() {
	a.once.Do(func() {
		a.started = make(chan struct{})
		a.interactionSlots = make(chan struct{}, maxInteractions)
		a.refusalSlots = make(chan struct{}, maxRefusals)
		a.backfillReq = make(chan struct{}, 1)
		a.flushReq = make(chan struct{}, 1)
		a.active = make(map[string]*activity)
		a.dirty = make(map[string]activity)
		a.refusals = chat.NewRefusals(chat.RefusalLimits{People: a.maxTold, Every: refusalEvery, Channels: maxRefusalChannels})
		a.interactions = make(map[string]interactionToken)
		a.threads = make(map[string]*threadStart)
		a.refs = make(map[string]string)
		a.streams = &chat.Streams[stream]{}
		a.guildsReady = make(chan struct{})
		close(a.guildsReady)
		if a.Now == nil {
			a.Now = time.Now
		}
		a.follows = &follow.Set{Store: a.Follows, Platform: Platform, Quiet: followQuiet, Max: maxFollowed, Now: a.Now, Log: a.Log}
	})
}

// intents returns the gateway intents: guilds, guild messages and direct
// messages, plus message content only when configured.
func (c Config) intents() discordgo.Intent {
	i := discordgo.IntentsGuilds | discordgo.IntentsGuildMessages | discordgo.IntentsDirectMessages
	if c.MessageContent {
		i |= discordgo.IntentsMessageContent
	}
	return i
}

// newSession builds a discordgo session for cfg whose REST calls go
// through the adapter's client (and to APIBase when set). The adapter
// holds the gateway connection itself (gateway.go), so the session's own
// is never opened.
func (a *Adapter) newSession(cfg Config) (*discordgo.Session, error) {
	s, err := discordgo.New(cfg.botToken())
	if err != nil {
		return nil, fmt.Errorf("discord: new session: %w", err)
	}
	client := a.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 20 * time.Second}
	}
	if a.APIBase != "" {
		base, err := url.Parse(a.APIBase)
		if err != nil || base.Host == "" || (base.Scheme != "http" && base.Scheme != "https") {
			return nil, fmt.Errorf("discord: api base %q: want an http(s) URL", a.APIBase)
		}
		c := *client
		next := c.Transport
		if next == nil {
			next = http.DefaultTransport
		}
		c.Transport = rewriteHost{scheme: base.Scheme, host: base.Host, next: next}
		client = &c
	}
	s.Client = client
	s.Identify.Intents = cfg.intents()
	s.ShouldReconnectOnError = false
	s.ShouldReconnectVoiceOnSessionError = false
	s.LogLevel = discordgo.LogError
	return s, nil
}

// rewriteHost sends requests for discord.com and its CDN to another host
// (tests).
type rewriteHost struct {
	scheme, host string
	next         http.RoundTripper
}

func (r rewriteHost) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host == "discord.com" || cdnHosts[req.URL.Host] {
		req = req.Clone(req.Context())
		req.URL.Scheme, req.URL.Host, req.Host = r.scheme, r.host, ""
	}
	return r.next.RoundTrip(req)
}

// Run opens the gateway session and serves until ctx ends, reconnecting
// after every loss with a capped exponential backoff with jitter (and
// RESUME when the session is still valid). It returns an error when the
// configuration is invalid, or a *CloseError naming the fix when Discord
// refuses the bot for good: an invalid token (close code 4004), a
// privileged intent not enabled in the Developer Portal (4014), sharding
// required (4011) and the like.
func (a *Adapter) Run(ctx context.Context) error {
	a.init()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	err := a.setup(ctx)
	a.startErr = err
	close(a.started)
	if err != nil {
		return err
	}
	a.loadCursors(ctx)
	a.goBG(func() { a.flushLoop(ctx) })
	a.goBG(func() { a.backfillLoop(ctx) })

	if a.sharded {
		err = a.runShards(ctx)
	} else {
		a.report("connecting")
		err = a.gw.run(ctx)
	}
	cancel()
	a.bg.Wait()
	if err != nil {
		a.Log.Error().Err(err).Msg("discord: stopping: Discord refused the bot")
		return err
	}
	return nil
}

func (a *Adapter) setup(ctx context.Context) error {
	if a.Runtime == nil {
		return errors.New("discord: adapter needs a Runtime")
	}
	cfg, err := a.Config.withDefaults()
	if err != nil {
		return fmt.Errorf("discord: config: %w", err)
	}
	a.cfg = cfg
	a.streams.Interval = cfg.StreamInterval
	s, err := a.newSession(cfg)
	if err != nil {
		return err
	}
	a.sess = s
	if a.isess, err = a.newSession(cfg); err != nil {
		return err
	}
	a.runCtx = ctx
	a.sharded = cfg.Shards != 1 || a.Shards != nil
	a.gw = a.newGateway()
	a.mu.Lock()
	a.appID = cfg.ApplicationID
	a.mu.Unlock()
	return nil
}

// newGateway returns a connection to the gateway that reports its state
// to OnState (not sharded).
func (a *Adapter) newGateway() *gateway {
	return &gateway{
		sess:     a.sess,
		dialer:   &websocket.Dialer{Proxy: http.ProxyFromEnvironment, HandshakeTimeout: dialTimeout},
		log:      a.Log,
		base:     cmp.Or(a.reconnectBase, reconnectBase),
		max:      cmp.Or(a.reconnectMax, reconnectMax),
		stable:   cmp.Or(a.stableAfter, stableAfter),
		maxFrame: cmp.Or(a.maxFrame, maxGatewayFrame),
		dispatch: a.dispatch,
		lost:     a.onDisconnect,
		reconnecting: func(resume bool) {
			if resume {
				a.report("reconnecting (resuming)")
			} else {
				a.report("reconnecting")
			}
		},
	}
}

// report tells OnState the connection's state (not sharded: runShards
// reports the shards').
func (a *Adapter) report(state string) {
	if a.OnState != nil && !a.sharded {
		a.OnState(state)
	}
}

// goBG runs f in a goroutine that Run waits for.
func (a *Adapter) goBG(f func()) {
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		f()
	}()
}

// ready waits until Run has built the session and returns it.
func (a *Adapter) ready(ctx context.Context) (*discordgo.Session, error) {
	a.init()
	select {
	case <-a.started:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if a.startErr != nil {
		return nil, fmt.Errorf("discord: adapter not running: %w", a.startErr)
	}
	return a.sess, nil
}

// dispatch handles one gateway event, in the gateway's reader: it keeps
// the State cache and passes what the adapter serves to its handlers,
// which persist (a fast database write) and hand any REST call to a
// goroutine of its own.
func (a *Adapter) dispatch(ctx context.Context, e *discordgo.Event) {
	switch e.Type {
	case "READY":
		if r, ok := decodeEvent[discordgo.Ready](a, e); ok {
			for _, g := range r.Guilds {
				setGuildIDs(g)
			}
			a.state(r)
			a.onReady(r)
			a.report("connected")
		}
	case "RESUMED":
		a.Log.Info().Msg("discord: gateway session resumed")
		a.report("connected (resumed)")
		a.afterGap()
	case "GUILD_CREATE":
		if g, ok := decodeEvent[discordgo.GuildCreate](a, e); ok && g.Guild != nil {
			setGuildIDs(g.Guild)
			a.state(g)
			a.guildAvailable(g.ID)
		}
	case "GUILD_UPDATE":
		if g, ok := decodeEvent[discordgo.GuildUpdate](a, e); ok && g.Guild != nil {
			setGuildIDs(g.Guild)
			a.state(g)
		}
	case "GUILD_DELETE":
		stateEvent[discordgo.GuildDelete](a, e)
	case "CHANNEL_CREATE":
		stateEvent[discordgo.ChannelCreate](a, e)
	case "CHANNEL_UPDATE":
		stateEvent[discordgo.ChannelUpdate](a, e)
	case "CHANNEL_DELETE":
		stateEvent[discordgo.ChannelDelete](a, e)
	case "THREAD_CREATE":
		stateEvent[discordgo.ThreadCreate](a, e)
	case "THREAD_UPDATE":
		stateEvent[discordgo.ThreadUpdate](a, e)
	case "THREAD_DELETE":
		stateEvent[discordgo.ThreadDelete](a, e)
	case "THREAD_LIST_SYNC":
		stateEvent[discordgo.ThreadListSync](a, e)
	case "MESSAGE_CREATE":
		if m, ok := decodeEvent[discordgo.MessageCreate](a, e); ok && m.Message != nil {
			a.handleMessage(ctx, m.Message, false)
		}
	case "MESSAGE_UPDATE":
		if m, ok := decodeEvent[discordgo.MessageUpdate](a, e); ok {
			a.onMessageUpdate(ctx, m)
		}
	case "MESSAGE_DELETE":
		if m, ok := decodeEvent[discordgo.MessageDelete](a, e); ok {
			a.onMessageDelete(ctx, m)
		}
	case "INTERACTION_CREATE":
		if ic, ok := decodeEvent[discordgo.InteractionCreate](a, e); ok && ic.Interaction != nil {
			a.onInteraction(ic.Interaction)
		}
	}
}

// decodeEvent decodes e's data as a T; a malformed event is logged (by
// type and size) and dropped.
func decodeEvent[T any](a *Adapter, e *discordgo.Event) (*T, bool) {
	v := new(T)
	if err := json.Unmarshal(e.RawData, v); err != nil {
		a.Log.Warn().Err(err).Str("event", e.Type).Int("bytes", len(e.RawData)).Msg("discord: malformed gateway event dropped")
		return nil, false
	}
	return v, true
}

// stateEvent decodes e as a T and applies it to the State cache.
func stateEvent[T any](a *Adapter, e *discordgo.Event) {
	if v, ok := decodeEvent[T](a, e); ok {
		a.state(v)
	}
}

// state applies an event to the session's State cache (channels and
// threads, for threadOf and startsThread).
func (a *Adapter) state(ev any) {
	if err := a.sess.State.OnInterface(a.sess, ev); err != nil {
		a.Log.Debug().Err(err).Msg("discord: state update")
	}
}

// setGuildIDs sets the guild id of a guild's channels and threads, which
// the gateway leaves out of GUILD_CREATE.
func setGuildIDs(g *discordgo.Guild) {
	if g == nil {
		return
	}
	for _, c := range g.Channels {
		c.GuildID = g.ID
	}
	for _, c := range g.Threads {
		c.GuildID = g.ID
	}
}

func (a *Adapter) onReady(r *discordgo.Ready) {
	a.mu.Lock()
	if r.User != nil {
		a.botID = r.User.ID
	}
	if a.appID == "" && r.Application != nil {
		a.appID = r.Application.ID
	}
	register := a.cfg.Commands && !a.commandsDone
	a.commandsDone = true
	// The guilds READY announces arrive as GUILD_CREATE right after; a
	// backfill waits for them (guildWait) to know their threads. Every
	// shard's READY adds its guilds to those awaited.
	wasReady := len(a.pendingGuild) == 0
	if wasReady || !a.sharded {
		a.pendingGuild = make(map[string]bool, len(r.Guilds))
	}
	for _, g := range r.Guilds {
		if g != nil && g.ID != "" {
			a.pendingGuild[g.ID] = true
		}
	}
	if wasReady || !a.sharded {
		a.guildsReady = make(chan struct{})
		if len(a.pendingGuild) == 0 {
			close(a.guildsReady)
		}
	}
	a.mu.Unlock()
	a.Log.Info().Int("guilds", len(r.Guilds)).Msg("discord: gateway session ready")
	if register {
		a.goBG(func() { a.registerCommands(a.runCtx) })
	}
	a.afterGap()
}

// guildAvailable notes a GUILD_CREATE of a guild READY announced.
func (a *Adapter) guildAvailable(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.pendingGuild[id] {
		return
	}
	delete(a.pendingGuild, id)
	if len(a.pendingGuild) == 0 {
		close(a.guildsReady)
	}
}

// onDisconnect notes that a connection that was ready ended: events from
// now until the next session may be lost.
func (a *Adapter) onDisconnect() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.gapSince.IsZero() {
		a.gapSince = a.Now()
	}
}
