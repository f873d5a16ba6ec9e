package discord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
)

// The adapter holds its own connection to Discord's gateway instead of
// discordgo's Session.Open. discordgo answers op 9 (invalid session) by
// identifying again at once, on the same socket, and a close code that
// reaches its reader is only logged: neither a loop of invalid sessions nor
// a fatal close (4004, 4014) arriving after one could be slowed or stopped
// from outside. Here every connection ends in one place (gateway.connect),
// which says why, and one loop (gateway.run) decides what follows: a capped
// exponential backoff with jitter before any new connection, a RESUME when
// the session is still valid, and an error naming the fix for the close
// codes that retrying cannot help. discordgo still makes the REST calls,
// provides the event types and keeps the State cache.

// CloseError is Discord closing the gateway with a code that retrying
// cannot fix (an invalid token, intents not enabled, sharding needed). Run
// returns it; Fix says what the operator must do.
type CloseError struct {
	// Code is the gateway close code (4004, 4010–4014).
	Code int
	// Fix is what to do about it, in a sentence.
	Fix string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("discord: the gateway closed the connection with %d: %s", e.Code, e.Fix)
}

// fatalClose returns the CloseError for gateway close codes that retrying
// cannot fix, else nil.
func fatalClose(code int) *CloseError {
	switch code {
	case 4004:
		return &CloseError{code, "the bot token is invalid: reset it in the Developer Portal (Bot → Reset Token) and set DISCORD_BOT_TOKEN (discord.token)"}
	case 4010:
		return &CloseError{code, "Discord refused the shard Talon sent; this is a bug in Talon, please report it"}
	case 4011:
		return &CloseError{code, "the bot is in too many servers for this shard count (sharding required, from 2,500 servers per shard): set discord.shards: auto, or a higher count"}
	case 4012:
		return &CloseError{code, "Discord no longer accepts the gateway version Talon speaks; upgrade Talon"}
	case 4013:
		return &CloseError{code, "Discord refused the gateway intents Talon sent; this is a bug in Talon, please report it"}
	case 4014:
		return &CloseError{code, "the Message Content intent is not enabled for this bot: enable it in the Developer Portal (Bot → Privileged Gateway Intents) or set discord.message_content: false"}
	}
	return nil
}

// Close codes after which the session cannot be resumed: the next
// connection identifies anew.
const (
	closeInvalidSeq     = 4007
	closeSessionTimeout = 4009
)

// closeResumable is the code the adapter closes with when it means to
// resume (any code but 1000 and 1001 keeps the session valid); a clean
// shutdown closes with 1000, which ends the session at once.
const closeResumable = 4900

// Reconnection backoff: the n-th reconnection in a row waits
// agent.Backoff(n, reconnectBase, reconnectMax). With a 2-minute cap, a
// session invalidated forever costs at most about 720 IDENTIFYs a day,
// under Discord's 1,000.
const (
	reconnectBase = time.Second
	reconnectMax  = 2 * time.Minute
	// stableAfter is how long a connection must have been ready for the
	// backoff to start again from reconnectBase.
	stableAfter = time.Minute
)

// Timeouts of one connection's set-up.
const (
	dialTimeout  = 30 * time.Second
	helloTimeout = 30 * time.Second
	writeTimeout = 10 * time.Second
)

// gateway is the bot's connection to Discord's gateway. run connects,
// identifies or resumes, heartbeats and hands each dispatch to the
// adapter, in order, from one goroutine; it reconnects after every loss.
type gateway struct {
	sess   *discordgo.Session // GET /gateway, the token and the IDENTIFY payload
	dialer *websocket.Dialer
	log    zerolog.Logger
	// base, max and stable tune the backoff (reconnectBase, reconnectMax,
	// stableAfter; tests shorten them).
	base, max, stable time.Duration
	// maxFrame bounds one frame read (maxGatewayFrame).
	maxFrame int64
	// dispatch handles an event (op 0), in the order received.
	dispatch func(ctx context.Context, e *discordgo.Event)
	// lost is called when a connection that was ready ends.
	lost func()
	// reconnecting, when set, is called before each wait for a new
	// connection, saying whether it will resume.
	reconnecting func(resume bool)
	// shard, when set, is [shard id, shard count], sent in IDENTIFY.
	shard *[2]int
	// identify, when set, waits for this shard's turn to identify (at
	// most one IDENTIFY per 5 s per bucket); it is called before each
	// connection that identifies rather than resumes.
	identify func(ctx context.Context) error
	// hold, when set, is this process's claim of the shard (ShardClaimer):
	// no frame is sent and no event handled once it is not held, and
	// IDENTIFY waits for its word.
	hold ShardHold
	// missed, when set, is told of each message the session of the
	// shard's previous owner replays when this claim takes it over: the
	// read back after the new session's READY handles it.
	missed func(e *discordgo.Event)

	// Used by run's goroutine only.
	url       string // from GET /gateway, with the version and encoding
	sessionID string // "" when the next connection must identify
	resumeURL string // where to resume sessionID (READY's resume_gateway_url)
	seq       atomic.Int64
	asked     bool        // the hold was asked for a session to take over
	handover  bool        // sessionID is the previous owner's: resume it, then end it
	ended     atomic.Bool // the last connection ended its session with a clean close
}

// errInvalidSession is op 9: Discord invalidated the session (or refused
// an IDENTIFY sent too soon).
var errInvalidSession = errors.New("discord: gateway invalidated the session (op 9)")

// errReconnect is op 7: Discord asked for a new connection.
var errReconnect = errors.New("discord: gateway asked to reconnect (op 7)")

// errNotHeld ends a connection whose shard this process does not hold any
// more (its lease expired while it slept, or was lost).
var errNotHeld = errors.New("discord: this process does not hold the shard any more; connection dropped")

// errSettle ends an unidentified connection that waits for the shard's
// previous connection to be gone (ShardHold.BeforeIdentify): the next one
// follows without a backoff.
var errSettle = errors.New("discord: waited for the shard's previous connection to end")

// errTakenOver ends the connection that resumed the session of the shard's
// previous owner and then ended it: the next one identifies at once.
var errTakenOver = errors.New("discord: took the shard's session over from its previous owner and ended it")

// errZombie is a connection that stopped acknowledging heartbeats.
var errZombie = errors.New("discord: gateway stopped acknowledging heartbeats")

// run serves connections until ctx ends (nil) or Discord closes with a
// fatal code (a *CloseError). Every new connection after the first waits a
// capped exponential backoff with jitter, whatever ended the last one.
func (g *gateway) run(ctx context.Context) error {
	for attempt := 0; ; {
		up, err := g.connect(ctx)
		if ctx.Err() != nil {
			if g.ended.Load() {
				g.endSession()
			}
			return nil
		}
		if errors.Is(err, errSettle) || errors.Is(err, errTakenOver) {
			continue
		}
		var ce *CloseError
		if errors.As(err, &ce) {
			return ce
		}
		if up > 0 {
			g.lost()
		}
		if up >= g.stable {
			attempt = 0
		}
		d := agent.Backoff(attempt, g.base, g.max)
		attempt++
		if g.reconnecting != nil {
			g.reconnecting(g.sessionID != "")
		}
		g.log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", d).Bool("resume", g.sessionID != "").
			Msg("discord: gateway connection lost; reconnecting")
		if !agent.Sleep(ctx, d) {
			return nil
		}
	}
}

// connect serves one connection until it ends, and returns how long it was
// ready (0 when it never got READY or RESUMED) and why it ended.
func (g *gateway) connect(ctx context.Context) (up time.Duration, err error) {
	if g.hold != nil && !g.asked {
		// The gateway's address first: a recorded resume URL is used only
		// on its host or Discord's (trustedResumeURL).
		if _, err := g.target(ctx, false); err != nil {
			return 0, err
		}
		g.asked = true
		if id, u, seq, ok := g.hold.Handover(ctx); ok {
			if u != "" && !trustedResumeURL(u, g.url) {
				g.log.Warn().Msg("discord: the recorded resume URL of the shard's session is on another host than Discord's gateway; resuming at the gateway's address instead")
				u = ""
			}
			g.sessionID, g.resumeURL, g.handover = id, u, true
			g.seq.Store(seq)
			g.log.Info().Msg("discord: resuming the session the shard's previous owner left, to take it over")
		}
	}
	g.handover = g.handover && g.sessionID != ""
	resume := g.sessionID != ""
	target, err := g.target(ctx, resume)
	if err != nil {
		return 0, err
	}
	if !resume && g.identify != nil {
		if err := g.identify(ctx); err != nil {
			return 0, fmt.Errorf("discord: wait for a turn to identify: %w", err)
		}
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	c, resp, err := g.dialer.DialContext(dctx, target, nil)
	cancel()
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		// Ask for the gateway's address again next time, and resume (if
		// at all) there.
		g.url, g.resumeURL = "", ""
		return 0, fmt.Errorf("discord: connect to the gateway: %w", err)
	}
	defer c.Close()
	// A frame larger than this ends the connection (and is resumed)
	// instead of growing the process's memory without bound.
	c.SetReadLimit(g.maxFrame)

	// held is false once the shard's claim has ended: then nothing more is
	// sent, not even a close frame, and the socket is dropped.
	held := func() bool { return g.hold == nil || g.hold.Held() }
	var wmu sync.Mutex // serialises writes
	send := func(v any) error {
		wmu.Lock()
		defer wmu.Unlock()
		if !held() {
			_ = c.Close()
			return errNotHeld
		}
		_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
		return c.WriteJSON(v)
	}
	// closeWith does not wait for a write in progress (WriteControl may
	// run beside one): the socket is closed within a second, which the
	// shard leases' fence counts on (cluster.Shards).
	closeWith := func(code int) {
		if held() {
			_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(time.Second))
		}
		_ = c.Close()
	}
	// endHandover is closeWith that first waits, up to a second, for the
	// gateway's echo of the close frame: the gateway has ended the
	// session when it comes. A message read meanwhile is noted as missed,
	// as the session's others are. Only the reader below may call it.
	endHandover := func(code int) {
		if held() && c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(time.Second)) == nil {
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			for {
				_, data, err := c.ReadMessage()
				if err != nil {
					break
				}
				var e discordgo.Event
				if json.Unmarshal(data, &e) == nil && e.Operation == 0 && e.Type == "MESSAGE_CREATE" && g.missed != nil {
					g.missed(&e)
				}
			}
		}
		_ = c.Close()
	}
	// When ctx ends, a clean close (1000) ends the session, which the
	// next process will not resume, and stops the reads below.
	stopOnDone := context.AfterFunc(ctx, func() {
		g.ended.Store(held())
		closeWith(websocket.CloseNormalClosure)
	})
	defer stopOnDone()

	_ = c.SetReadDeadline(time.Now().Add(helloTimeout))
	var hello struct {
		Op int `json:"op"`
		D  struct {
			HeartbeatInterval int64 `json:"heartbeat_interval"`
		} `json:"d"`
	}
	if err := c.ReadJSON(&hello); err != nil {
		return 0, g.readError(err)
	}
	if hello.Op != 10 || hello.D.HeartbeatInterval <= 0 {
		closeWith(closeResumable)
		return 0, fmt.Errorf("discord: gateway sent op %d, want HELLO (10) with a heartbeat interval", hello.Op)
	}
	_ = c.SetReadDeadline(time.Time{})
	interval := time.Duration(hello.D.HeartbeatInterval) * time.Millisecond

	if !resume && g.hold != nil {
		wait, err := g.hold.BeforeIdentify(ctx, interval)
		if err != nil {
			closeWith(websocket.CloseNormalClosure)
			return 0, fmt.Errorf("discord: before IDENTIFY: %w", err)
		}
		if wait > 0 {
			closeWith(websocket.CloseNormalClosure)
			g.log.Info().Dur("wait", wait).Msg("discord: waiting for Discord to drop the shard's previous connection before identifying")
			if !agent.Sleep(ctx, wait) {
				return 0, nil
			}
			return 0, errSettle
		}
	}

	if g.handover {
		if err := g.hold.BeforeResume(ctx); err != nil {
			closeWith(websocket.CloseNormalClosure)
			return 0, fmt.Errorf("discord: before RESUME: %w", err)
		}
	}
	if resume {
		err = send(map[string]any{"op": 6, "d": map[string]any{
			"token": g.sess.Token, "session_id": g.sessionID, "seq": g.seq.Load(),
		}})
	} else {
		g.seq.Store(0)
		id := g.sess.Identify
		id.Compress = false // plain text frames
		id.Shard = g.shard
		err = send(map[string]any{"op": 2, "d": id})
	}
	if err != nil {
		return 0, fmt.Errorf("discord: send IDENTIFY or RESUME: %w", err)
	}

	// Heartbeats: the first after a random part of the interval, then
	// every interval; one not acknowledged by the next makes the
	// connection a zombie, closed so that it can be resumed.
	var acked, zombie atomic.Bool
	acked.Store(true)
	heartbeat := func() error { return send(map[string]any{"op": 1, "d": g.seq.Load()}) }
	hbStop, hbDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(hbDone)
		t := time.NewTimer(time.Duration(rand.Int64N(int64(interval)) + 1))
		defer t.Stop()
		for {
			select {
			case <-hbStop:
				return
			case <-t.C:
			}
			if !acked.Swap(false) {
				zombie.Store(true)
				closeWith(closeResumable)
				return
			}
			if heartbeat() != nil {
				return // the reader sees the broken connection
			}
			t.Reset(interval)
		}
	}()
	defer func() {
		close(hbStop)
		<-hbDone
	}()

	var readyAt time.Time
	draining := false // a handed-over session said RESUMED; a heartbeat was sent after it
	upFor := func() time.Duration {
		if readyAt.IsZero() {
			return 0
		}
		return max(time.Since(readyAt), time.Nanosecond)
	}
	for {
		_, data, err := c.ReadMessage()
		if err != nil {
			if zombie.Load() {
				return upFor(), errZombie
			}
			return upFor(), g.readError(err)
		}
		if !held() {
			// Woken past the lease (or it was lost): what was read is
			// another owner's now.
			_ = c.Close()
			return upFor(), errNotHeld
		}
		var e discordgo.Event
		if err := json.Unmarshal(data, &e); err != nil {
			g.log.Warn().Err(err).Int("bytes", len(data)).Msg("discord: undecodable gateway frame ignored")
			continue
		}
		switch e.Operation {
		case 0:
			if e.Sequence > 0 {
				g.seq.Store(e.Sequence)
			}
			if g.handover {
				// The previous owner's session replays what its
				// connection missed and says RESUMED (Discord replays
				// first; a heartbeat's acknowledgement comes after both
				// in any order): it is served here alone then. The
				// messages replayed are read back once the next session's
				// state has arrived.
				if e.Type == "MESSAGE_CREATE" && g.missed != nil {
					g.missed(&e)
				}
				if e.Type == "RESUMED" && !draining {
					draining = true
					if err := heartbeat(); err != nil {
						return 0, fmt.Errorf("discord: send heartbeat: %w", err)
					}
				}
				continue
			}
			switch e.Type {
			case "READY":
				var r struct {
					SessionID        string `json:"session_id"`
					ResumeGatewayURL string `json:"resume_gateway_url"`
				}
				_ = json.Unmarshal(e.RawData, &r)
				g.sessionID, g.resumeURL = r.SessionID, r.ResumeGatewayURL
				readyAt = time.Now()
			case "RESUMED":
				readyAt = time.Now()
			}
			g.dispatch(ctx, &e)
			if g.hold != nil {
				g.hold.Serving(g.sessionID, g.resumeURL, g.seq.Load())
			}
		case 1:
			if err := heartbeat(); err != nil {
				return upFor(), fmt.Errorf("discord: send heartbeat: %w", err)
			}
		case 7:
			closeWith(closeResumable)
			return upFor(), errReconnect
		case 9:
			var resumable bool
			_ = json.Unmarshal(e.RawData, &resumable)
			if !resumable {
				g.endSession()
			}
			closeWith(closeResumable)
			return upFor(), errInvalidSession
		case 11:
			acked.Store(true)
			if g.handover && draining {
				// Ending the session ends it everywhere; the next
				// connection identifies without waiting for Discord, but
				// only once Discord has answered the close: else its
				// IDENTIFY could reach Discord before the close, the
				// shard connected twice for a moment.
				g.hold.Taken()
				endHandover(websocket.CloseNormalClosure)
				g.endSession()
				g.log.Info().Msg("discord: took the shard's session over from its previous owner and ended it; identifying")
				return 0, errTakenOver
			}
		}
	}
}

// target returns the URL of the next connection: where the session
// resumes, or the gateway's address (asked for once, then reused).
func (g *gateway) target(ctx context.Context, resume bool) (string, error) {
	if resume && g.resumeURL != "" {
		return withGatewayQuery(g.resumeURL)
	}
	if g.url == "" {
		u, err := g.sess.Gateway(discordgo.WithContext(ctx))
		var re *discordgo.RESTError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode == http.StatusUnauthorized {
			// The token is refused before any socket: as 4004, retrying
			// cannot help.
			return "", fatalClose(4004)
		}
		if err != nil {
			return "", fmt.Errorf("discord: ask for the gateway's address: %w", err)
		}
		if g.url, err = withGatewayQuery(u); err != nil {
			return "", err
		}
	}
	return g.url, nil
}

// withGatewayQuery adds the API version and encoding to a gateway URL.
func withGatewayQuery(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "wss" && u.Scheme != "ws") || u.Host == "" {
		return "", fmt.Errorf("discord: gateway address %q: want a ws(s) URL", raw)
	}
	if u.Path == "" {
		u.Path = "/"
	}
	q := u.Query()
	q.Set("v", discordgo.APIVersion)
	q.Set("encoding", "json")
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// readError classifies why reading the gateway failed: a fatal close code
// becomes a *CloseError; a code after which the session cannot be resumed
// makes the next connection identify.
// maxGatewayFrame bounds one gateway frame (gateway.maxFrame, which
// tests lower). Discord's largest, a large server's GUILD_CREATE, is a few
// MiB.
const maxGatewayFrame = 64 << 20

func (g *gateway) readError(err error) error {
	if errors.Is(err, websocket.ErrReadLimit) {
		return fmt.Errorf("discord: a gateway frame was larger than %d bytes; reconnecting", g.maxFrame)
	}
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		return fmt.Errorf("discord: read from the gateway: %w", err)
	}
	if fatal := fatalClose(ce.Code); fatal != nil {
		return fatal
	}
	if ce.Code == closeInvalidSeq || ce.Code == closeSessionTimeout {
		g.endSession()
	}
	return fmt.Errorf("discord: the gateway closed the connection: %w", err)
}

// endSession forgets the session, which Discord ended or refused: the next
// connection identifies, and the next owner of the shard has none to take
// over.
func (g *gateway) endSession() {
	g.sessionID, g.resumeURL, g.handover = "", "", false
	if g.hold != nil {
		g.hold.Serving("", "", 0)
	}
}

// trustedResumeURL reports whether resume, a resume URL another replica
// recorded in NATS, may be sent the bot's token: a ws(s) URL on the host
// of the gateway's address (gateway, from GET /gateway) or on Discord's
// domain. Anyone able to write the deployment's NATS buckets could
// otherwise have the token sent to a host of theirs.
func trustedResumeURL(resume, gateway string) bool {
	r, err := url.Parse(resume)
	if err != nil || (r.Scheme != "wss" && r.Scheme != "ws") || r.User != nil {
		return false
	}
	host := strings.ToLower(r.Hostname())
	if g, err := url.Parse(gateway); err == nil && g.Hostname() != "" && strings.EqualFold(g.Hostname(), host) && (r.Scheme == g.Scheme) {
		return true
	}
	return r.Scheme == "wss" && (host == "discord.gg" || strings.HasSuffix(host, ".discord.gg"))
}
