package admin

import (
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"mailproxy/proxy"
	"mailproxy/tokens"
)

// Metrics counts what sessions do (it is the proxy's Observer) and reads
// the token caches' state when scraped. Labels are profile and protocol
// names: never a user, address or token.
type Metrics struct {
	reg       *prometheus.Registry
	sessions  *prometheus.CounterVec
	active    *prometheus.GaugeVec
	bytes     *prometheus.CounterVec
	messages  *prometheus.CounterVec
	msgBytes  *prometheus.CounterVec
	errors    *prometheus.CounterVec
	loginTime *prometheus.HistogramVec
	relayTime *prometheus.HistogramVec
	graph     *prometheus.CounterVec
	throttled *prometheus.CounterVec
	retries   *prometheus.CounterVec
	reloads   *prometheus.CounterVec
	reloadBad prometheus.Gauge
	tokens    *tokenStates
}

// TokenSource is what the metrics read of a profile's token cache.
type TokenSource interface {
	State() tokens.State
}

// NewMetrics registers mailproxy's metrics, the token state of caches (by
// profile) and the Go runtime's; with store, the number of token store
// changes not yet saved (a full disk) and whether it answers.
func NewMetrics(caches map[string]TokenSource, store TokenStore) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	m.sessions = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailproxy_sessions_total",
		Help: "Sessions of a profile: SMTP logins, IMAP and POP3 sessions logged in upstream."}, []string{"protocol", "profile"})
	m.active = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mailproxy_sessions_active",
		Help: "Sessions of a profile open now."}, []string{"protocol", "profile"})
	m.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailproxy_relayed_bytes_total",
		Help: "Bytes relayed by sessions that ended, by direction (up: to the server; SMTP: accepted messages)."}, []string{"protocol", "profile", "direction"})
	m.messages = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailproxy_messages_relayed_total",
		Help: "Messages the upstream accepted (SMTP 250 given to the app)."}, []string{"profile"})
	m.msgBytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailproxy_message_bytes_total",
		Help: "Bytes of the messages the upstream accepted."}, []string{"profile"})
	m.errors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailproxy_upstream_errors_total",
		Help: "Upstream failures by class: token, sign_in, refused, rejected, unavailable."}, []string{"protocol", "profile", "class"})
	m.loginTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "mailproxy_upstream_login_seconds",
		Help: "Time to connect and log in upstream (IMAP, POP3).", Buckets: prometheus.DefBuckets}, []string{"protocol"})
	m.relayTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "mailproxy_message_relay_seconds",
		Help: "Time from DATA to the upstream's acceptance.", Buckets: prometheus.DefBuckets}, []string{"profile"})
	m.graph = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailproxy_graph_requests_total",
		Help: "Microsoft Graph requests by the class of their status (2xx, 4xx, 5xx; none: no answer)."}, []string{"profile", "class"})
	m.throttled = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailproxy_graph_throttled_total",
		Help: "Microsoft Graph requests answered 429 (throttled)."}, []string{"profile"})
	m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailproxy_graph_retries_total",
		Help: "Microsoft Graph requests tried again, by reason (throttled, unavailable, token)."}, []string{"profile", "reason"})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailproxy_config_reloads_total",
		Help: "Reloads of the configuration file, by result (ok, failed)."}, []string{"result"})
	m.reloadBad = prometheus.NewGauge(prometheus.GaugeOpts{Name: "mailproxy_config_last_reload_failed",
		Help: "1 when the last reload was refused (the configuration before it stays in force)."})
	m.tokens = &tokenStates{caches: caches}
	for _, c := range []prometheus.Collector{m.sessions, m.active, m.bytes, m.messages, m.msgBytes, m.errors, m.loginTime, m.relayTime,
		m.graph, m.throttled, m.retries, m.reloads, m.reloadBad,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), m.tokens} {
		f(c)
	}
	if store != nil {
		f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mailproxy_token_store_unsaved_changes",
			Help: "Token store changes (rotated refresh tokens among them) kept in memory because the store cannot be written; 0 when all are saved."},
			func() float64 { return float64(store.Unsaved()) }))
		f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mailproxy_token_store_up",
			Help: "1 when the token store answered the last time it was read or locked; 0 while it cannot be reached (tokens in memory still serve)."},
			func() float64 {
				if store.Reachable() != nil {
					return 0
				}
				return 1
			}))
	}
	return m
}

// TokenStore is what the metrics read of the token store.
type TokenStore interface {
	Unsaved() int
	Reachable() error
}

var _ proxy.Observer = (*Metrics)(nil)

// SessionStarted implements proxy.Observer.
func (m *Metrics) SessionStarted(proto, profile string) {
	m.sessions.WithLabelValues(proto, profile).Inc()
	m.active.WithLabelValues(proto, profile).Inc()
}

// LoggedIn implements proxy.Observer.
func (m *Metrics) LoggedIn(proto, _ string, d time.Duration) {
	m.loginTime.WithLabelValues(proto).Observe(d.Seconds())
}

// SessionEnded implements proxy.Observer.
func (m *Metrics) SessionEnded(proto, profile string, up, down int64) {
	m.active.WithLabelValues(proto, profile).Dec()
	m.bytes.WithLabelValues(proto, profile, "up").Add(float64(up))
	m.bytes.WithLabelValues(proto, profile, "down").Add(float64(down))
}

// Relayed implements proxy.Observer.
func (m *Metrics) Relayed(profile string, n int64, d time.Duration) {
	m.messages.WithLabelValues(profile).Inc()
	m.msgBytes.WithLabelValues(profile).Add(float64(n))
	m.relayTime.WithLabelValues(profile).Observe(d.Seconds())
}

// Failed implements proxy.Observer.
func (m *Metrics) Failed(proto, profile string, err error) {
	m.errors.WithLabelValues(proto, profile, proxy.ErrorClass(err)).Inc()
}

// GraphRequest implements graph.Observer.
func (m *Metrics) GraphRequest(profile string, status int) {
	class := "none"
	if status > 0 {
		class = fmt.Sprintf("%dxx", status/100)
	}
	m.graph.WithLabelValues(profile, class).Inc()
	if status == 429 {
		m.throttled.WithLabelValues(profile).Inc()
	}
}

// GraphRetry implements graph.Observer.
func (m *Metrics) GraphRetry(profile, reason string) {
	m.retries.WithLabelValues(profile, reason).Inc()
}

// Reloaded counts a reload of the configuration: ok, or refused.
func (m *Metrics) Reloaded(ok bool) {
	if ok {
		m.reloads.WithLabelValues("ok").Inc()
		m.reloadBad.Set(0)
		return
	}
	m.reloads.WithLabelValues("failed").Inc()
	m.reloadBad.Set(1)
}

// SetTokenSources replaces the caches whose state is reported (a reload
// changed the profiles).
func (m *Metrics) SetTokenSources(caches map[string]TokenSource) {
	m.tokens.mu.Lock()
	defer m.tokens.mu.Unlock()
	m.tokens.caches = caches
}

// tokenStates reports the token caches' state when scraped.
type tokenStates struct {
	mu     sync.Mutex
	caches map[string]TokenSource
}

var (
	descRefreshes = prometheus.NewDesc("mailproxy_token_refreshes_total", "Successful token requests.", []string{"profile"}, nil)
	descFailures  = prometheus.NewDesc("mailproxy_token_failures_total", "Failed token requests.", []string{"profile"}, nil)
	descValid     = prometheus.NewDesc("mailproxy_token_valid_until_seconds", "Expiry of the cached token (Unix time; 0: none).", []string{"profile"}, nil)
	descSignIn    = prometheus.NewDesc("mailproxy_token_needs_sign_in", "1 when a person must sign in again (mailproxy token add).", []string{"profile"}, nil)
)

func (t *tokenStates) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRefreshes
	ch <- descFailures
	ch <- descValid
	ch <- descSignIn
}

func (t *tokenStates) Collect(ch chan<- prometheus.Metric) {
	t.mu.Lock()
	caches := t.caches
	t.mu.Unlock()
	for name, c := range caches {
		st := c.State()
		valid := 0.0
		if !st.ValidUntil.IsZero() {
			valid = float64(st.ValidUntil.Unix())
		}
		sign := 0.0
		if st.NeedsSignIn {
			sign = 1
		}
		ch <- prometheus.MustNewConstMetric(descRefreshes, prometheus.CounterValue, float64(st.Refreshes), name)
		ch <- prometheus.MustNewConstMetric(descFailures, prometheus.CounterValue, float64(st.Failures), name)
		ch <- prometheus.MustNewConstMetric(descValid, prometheus.GaugeValue, valid, name)
		ch <- prometheus.MustNewConstMetric(descSignIn, prometheus.GaugeValue, sign, name)
	}
}
