package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/sandbox"
)

// metrics implements agent.Metrics with Prometheus collectors on a registry
// of its own (no global state). The Go runtime and process collectors join
// the registry on the first scrape of /metrics (handler).
type metrics struct {
	reg        *prometheus.Registry
	turns      *prometheus.CounterVec
	turnTime   prometheus.Histogram
	llmErrors  *prometheus.CounterVec
	llmCalls   *prometheus.CounterVec
	llmTokens  *prometheus.CounterVec
	llmTime    *prometheus.HistogramVec
	queueDepth prometheus.Gauge
	redacted   *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		turns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "talon_turns_total", Help: "Turns finished, by outcome.",
		}, []string{"outcome"}),
		turnTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "talon_turn_duration_seconds", Help: "Time from the start of a turn to its persisted reply.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 12),
		}),
		llmErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "talon_llm_errors_total", Help: "Failed model calls (after retries), by kind.",
		}, []string{"kind"}),
		llmCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "talon_llm_requests_total", Help: "Model calls, by purpose (turn, summary) and outcome (ok, or the error kind).",
		}, []string{"purpose", "outcome"}),
		llmTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "talon_llm_tokens_total",
			Help: "Tokens of model calls, by purpose and direction (input, output); as the provider reported them, else estimated.",
		}, []string{"purpose", "direction"}),
		llmTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "talon_llm_request_duration_seconds", Help: "Time a model call took, retries included, by purpose.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2.5, 10),
		}, []string{"purpose"}),
		queueDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "talon_queue_depth", Help: "Accepted messages not yet answered and delivered.",
		}),
		redacted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "talon_secrets_redacted_total",
			Help: "Secrets removed, by where they were found; where=\"llm_request\" is the last line of defence and should stay at zero.",
		}, []string{"where"}),
	}
	m.reg.MustRegister(m.turns, m.turnTime, m.llmErrors, m.llmCalls, m.llmTokens, m.llmTime, m.queueDepth, m.redacted)
	return m
}

// sandbox exports the sandbox's memory budget: the memory of its live
// instances, the budget, the calls waiting for memory, and the calls that
// had to wait with their total time waiting (their ratio is the mean
// wait).
func (m *metrics) sandbox(sb *sandbox.Runtime) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "talon_sandbox_memory_bytes",
			Help: "Memory of the live tool instances (linear memory and tables at their reserved size, pooled ones included).",
		}, func() float64 { return float64(sb.Stats().Memory) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "talon_sandbox_memory_limit_bytes", Help: "The budget of tool memory: sandbox.max_memory_mib.",
		}, func() float64 { return float64(sb.Stats().MemoryLimit) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "talon_sandbox_memory_waiting", Help: "Tool calls waiting for memory now.",
		}, func() float64 { return float64(sb.Stats().MemoryWaiting) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "talon_sandbox_memory_waits_total", Help: "Tool calls that had to wait for memory.",
		}, func() float64 { return float64(sb.Stats().MemoryWaits) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "talon_sandbox_memory_wait_seconds_total", Help: "Time tool calls spent waiting for memory.",
		}, func() float64 { return sb.Stats().MemoryWaitTime.Seconds() }),
	)
}

// handler serves the registry on /metrics. The Go runtime's and the
// process's own collectors are added by the first scrape: a gateway nobody
// scrapes does not pay for them.
func (m *metrics) handler() http.Handler {
	var once sync.Once
	h := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() {
			m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		})
		h.ServeHTTP(w, r)
	})
}

func (m *metrics) TurnFinished(outcome string, d time.Duration) {
	m.turns.WithLabelValues(outcome).Inc()
	m.turnTime.Observe(d.Seconds())
}

// ModelUsed meters one model call. Principals, sessions and turns are not
// labels: their number is unbounded.
func (m *metrics) ModelUsed(u agent.ModelUse) {
	purpose, outcome := string(u.Purpose), "ok"
	if u.Error != "" {
		outcome = u.Error
		m.llmErrors.WithLabelValues(u.Error).Inc()
	}
	m.llmCalls.WithLabelValues(purpose, outcome).Inc()
	m.llmTokens.WithLabelValues(purpose, "input").Add(float64(u.Usage.InputTokens))
	m.llmTokens.WithLabelValues(purpose, "output").Add(float64(u.Usage.OutputTokens))
	m.llmTime.WithLabelValues(purpose).Observe(u.Duration.Seconds())
}

func (m *metrics) QueueDepth(delta int) { m.queueDepth.Add(float64(delta)) }
func (m *metrics) Redacted(where string, n int) {
	m.redacted.WithLabelValues(where).Add(float64(n))
}

// opsListener serves /healthz, /readyz and /metrics.
type opsListener struct {
	ln  net.Listener
	srv *http.Server
}

// opsServer listens on addr and serves the operational endpoints on mux
// (which may already carry a channel's endpoints, e.g. Slack's Events API).
func (a *app) opsServer(addr string, mux *http.ServeMux) (*opsListener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http listener on %s: %w (set http.listen to a free address, or \"\" to disable it)", addr, err)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-a.rt.Stopping():
			http.Error(w, "stopping", http.StatusServiceUnavailable)
			return
		default:
		}
		select {
		case <-a.rt.Ready():
		default:
			http.Error(w, "recovering", http.StatusServiceUnavailable)
			return
		}
		if err := a.db.Ping(r.Context()); err != nil {
			http.Error(w, "database unavailable", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", a.metrics.handler())
	a.log.Info().Str("addr", ln.Addr().String()).Msg("http listener for /healthz, /readyz and /metrics")
	return &opsListener{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}, nil
}

// run serves until ctx ends, then shuts down gracefully.
func (o *opsListener) run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- o.srv.Serve(o.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http listener: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := o.srv.Shutdown(sctx)
	<-errc
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
