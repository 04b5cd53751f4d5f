package sidecar

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/linkgate/linkgate/internal/boundedfile"
	"github.com/linkgate/linkgate/internal/clock"
	"github.com/linkgate/linkgate/internal/redact"
)

// Email TLS modes. There is no plain-text mode: a notifier that may hold
// credentials never talks to its server unencrypted.
const (
	// EmailSTARTTLS connects in plain text and upgrades with STARTTLS
	// before anything else (submission, port 587). The upgrade is
	// required, not opportunistic: a server that does not offer it gets
	// nothing, neither the credentials nor the message.
	EmailSTARTTLS = "starttls"
	// EmailTLS speaks TLS from the first byte (implicit TLS, port 465).
	EmailTLS = "tls"
)

// EmailOptions configure Email.
type EmailOptions struct {
	// Server is the SMTP server as host:port (required). Its host name
	// (or IP address) is what the server's certificate must name.
	Server string
	// TLS is EmailSTARTTLS (default) or EmailTLS.
	TLS string
	// CAFile is a PEM bundle trusted instead of the system roots, for a
	// server with a private CA. It is read at every attempt.
	CAFile string
	// User authenticates with AUTH PLAIN; empty: no authentication.
	User string
	// PasswordFile holds User's password (required with User, and only
	// with it). It is read at every attempt, so a rotated secret is used
	// without a restart; a trailing newline is not part of the password.
	PasswordFile string
	// Password is User's password given inline (a hyper2kvm file's
	// email_password), used only without PasswordFile. Never logged.
	Password string `json:"-"`
	// From is the sender and To the recipients, as net/mail parses them
	// ("ops@example.com" or "Ops <ops@example.com>").
	From string
	To   []string
	// Hostname names this machine in the message (default os.Hostname()).
	Hostname string
	// QueueSize bounds the queue of undelivered transitions; when full
	// the oldest is dropped and counted (default 16).
	QueueSize int
	// MaxAttempts per notification, first try included (default 5).
	MaxAttempts int
	// Backoff is the first retry delay, doubling up to MaxBackoff
	// (defaults 1s and 1m).
	Backoff, MaxBackoff time.Duration
	// Timeout bounds one attempt: connection, TLS, the SMTP dialogue
	// (default 30s).
	Timeout time.Duration
	Logger  *slog.Logger
	// Clock times the retries and dates the messages.
	Clock clock.Clock
}

// Email sends one message per gate transition (not for the state the gate
// starts in) over SMTP with TLS, as Webhooks POSTs one document: it
// follows the gate's State and Next chain, so no transition is skipped,
// and one worker delivers from a bounded queue that drops its oldest
// entry when full, so a slow server never delays the gate.
//
// A 5xx reply is final (result rejected); a 4xx reply or a connection
// error is retried with exponential backoff (result failed after the last
// attempt). A connection that would not be secure is refused at once and
// not retried (result failed): no STARTTLS offered, a certificate that
// does not verify for the server's name, no AUTH PLAIN to authenticate
// with. Pending notifications are dropped at shutdown.
//
// A message is plain text: the subject names the host, the new state and
// the failing checks; the body adds when, each failing check's reason and
// every check's "[+]name ok" / "[-]name failed: reason" line. Reasons are
// safe to show; nothing else goes in. The password is only ever sent
// inside TLS; it is never logged, and an SMTP reply that echoes it is
// scrubbed before it is logged. Email's metrics are linkgate_email_*.
type Email struct {
	opts  EmailOptions
	log   *slog.Logger
	clock clock.Clock
	host  string // the server's host: TLS ServerName and AUTH's host
	helo  string // EHLO name
	from  *mail.Address
	to    []*mail.Address
	start *State // transitions after this one are notified (Run's only)

	queue *stateQueue

	deliveries map[string]*atomic.Uint64
	retries    atomic.Uint64
	dropped    atomic.Uint64
	running    atomic.Bool

	// onDelivered and onDropped, if set, are called after each
	// notification's final result and each drop (tests).
	onDelivered func(result string)
	onDropped   func()
}

// EmailConfigError is an EmailOptions field that is not valid. Field is
// the option's name (Server, TLS, CAFile, User, PasswordFile, From, To,
// Hostname), for the caller to name its own flag. The text never holds
// the password, nor a password written into Server.
type EmailConfigError struct {
	Field string
	Err   error
}

func (e *EmailConfigError) Error() string { return "email " + e.Field + ": " + e.Err.Error() }
func (e *EmailConfigError) Unwrap() error { return e.Err }

func emailInvalid(field, format string, args ...any) error {
	return &EmailConfigError{Field: field, Err: fmt.Errorf(format, args...)}
}

// NewEmail validates o and returns an Email that will notify every
// transition of g after this call; start it with Run. The password and CA
// files are read once here, so that a wrong path fails at start.
func NewEmail(g *Gate, o EmailOptions) (*Email, error) {
	e, err := newEmail(o)
	if err != nil {
		return nil, err
	}
	e.start = g.State()
	return e, nil
}

// Validate checks o as NewEmail does, reading the password and CA files,
// without a gate (for a configuration check). Its error is an
// *EmailConfigError.
func (o EmailOptions) Validate() error {
	_, err := newEmail(o)
	return err
}

func newEmail(o EmailOptions) (*Email, error) {
	deliveryDefaults(&o.QueueSize, &o.MaxAttempts, &o.Backoff, &o.MaxBackoff)
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Hostname == "" {
		o.Hostname, _ = os.Hostname()
	}
	e := &Email{
		opts:       o,
		log:        o.Logger,
		clock:      clock.Or(o.Clock),
		queue:      newStateQueue(o.QueueSize),
		deliveries: map[string]*atomic.Uint64{},
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	for _, r := range deliveryResults {
		e.deliveries[r] = new(atomic.Uint64)
	}

	// The server: host:port and nothing else. Shown through redact, as a
	// mistaken user:password@host would otherwise be echoed.
	if strings.ContainsAny(o.Server, "@/") {
		return nil, emailInvalid("Server", "%s: want host:port; credentials go in the user and password file", redact.Target(o.Server))
	}
	host, port, err := net.SplitHostPort(o.Server)
	if err != nil || host == "" {
		return nil, emailInvalid("Server", "%q: want host:port, e.g. smtp.example.com:587", o.Server)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return nil, emailInvalid("Server", "%q: port %q: want 1 to 65535", o.Server, port)
	}
	e.host = host
	switch o.TLS {
	case "":
		e.opts.TLS = EmailSTARTTLS
	case EmailSTARTTLS, EmailTLS:
	default:
		return nil, emailInvalid("TLS", "%q: want starttls or tls", o.TLS)
	}

	if e.from, err = parseAddress(o.From); err != nil {
		return nil, emailInvalid("From", "%v", err)
	}
	if len(o.To) == 0 {
		return nil, emailInvalid("To", "no recipient")
	}
	for i, s := range o.To {
		a, err := parseAddress(s)
		if err != nil {
			return nil, emailInvalid("To", "recipient %d: %v", i+1, err)
		}
		e.to = append(e.to, a)
	}

	if o.Hostname == "" || strings.IndexFunc(o.Hostname, unicode.IsControl) >= 0 {
		return nil, emailInvalid("Hostname", "want a name without control characters")
	}
	e.helo = "localhost"
	if validHelo(o.Hostname) {
		e.helo = o.Hostname
	}

	switch {
	case o.User != "" && o.PasswordFile == "" && o.Password == "":
		return nil, emailInvalid("PasswordFile", "a user needs a password file")
	case o.User == "" && (o.PasswordFile != "" || o.Password != ""):
		return nil, emailInvalid("User", "a password file needs a user")
	case strings.IndexFunc(o.User, unicode.IsControl) >= 0:
		return nil, emailInvalid("User", "control characters are not allowed")
	case o.User != "":
		if _, err := e.password(); err != nil {
			return nil, &EmailConfigError{Field: "PasswordFile", Err: err}
		}
	}
	if _, err := e.tlsConfig(); err != nil {
		return nil, &EmailConfigError{Field: "CAFile", Err: err}
	}
	return e, nil
}

// parseAddress accepts one address, with or without a display name.
func parseAddress(s string) (*mail.Address, error) {
	if s == "" {
		return nil, errors.New("no address")
	}
	a, err := mail.ParseAddress(s)
	if err != nil {
		return nil, fmt.Errorf("%q: %v", s, err)
	}
	return a, nil
}

// validHelo reports whether s can be sent as the EHLO domain.
func validHelo(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, r := range s {
		if !(r == '.' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

// password reads the password file; the error names the file only.
func (e *Email) password() (string, error) {
	if e.opts.PasswordFile == "" {
		return e.opts.Password, nil
	}
	return boundedfile.ReadPassword(e.opts.PasswordFile)
}

// tlsConfig verifies the server's certificate for its host, against the
// CA file if one is given, else the system roots.
func (e *Email) tlsConfig() (*tls.Config, error) {
	conf := &tls.Config{ServerName: e.host, MinVersion: tls.VersionTLS12}
	if e.opts.CAFile == "" {
		return conf, nil
	}
	pool, err := boundedfile.CertPool(e.opts.CAFile)
	if err != nil {
		return nil, err
	}
	conf.RootCAs = pool
	return conf, nil
}

// Run follows the gate's transitions and delivers them until ctx ends; it
// returns after the worker has stopped.
func (e *Email) Run(ctx context.Context) error {
	if !e.running.CompareAndSwap(false, true) {
		return errors.New("email: already running")
	}
	defer e.running.Store(false)
	var wg sync.WaitGroup
	wg.Go(func() { e.work(ctx) })
	followTransitions(ctx, &e.start, e.enqueue)
	wg.Wait()
	// Whatever is still queued will not be sent.
	e.dropped.Add(uint64(e.queue.clear()))
	return nil
}

func (e *Email) enqueue(st *State) {
	if e.queue.push(st) {
		e.dropped.Add(1)
		e.log.Warn("email queue full; dropped the oldest notification", "server", e.opts.Server)
		if e.onDropped != nil {
			e.onDropped()
		}
	}
}

func (e *Email) queued() int { return e.queue.len() }

func (e *Email) work(ctx context.Context) {
	for {
		st := e.queue.next(ctx)
		if st == nil {
			return
		}
		if ctx.Err() != nil {
			e.dropped.Add(1) // the rest is counted when Run returns
			return
		}
		e.deliver(ctx, st)
	}
}

// deliver sends one notification with retries. The message is built once,
// so that every attempt carries the same Date and Message-ID and a
// receiver can tell a repeat from a new transition.
func (e *Email) deliver(ctx context.Context, st *State) {
	msg := emailMessage(st, e.opts.Hostname, e.from, e.to, e.clock.Now(), newMessageID(e.from))
	delay := e.opts.Backoff
	for attempt := 1; ; attempt++ {
		err := e.send(ctx, msg)
		switch {
		case err == nil:
			e.finish(DeliverySuccess, slog.LevelDebug, "email sent", "attempts", attempt)
			return
		case ctx.Err() != nil:
			e.dropped.Add(1)
			return
		case err.kind == attemptRejected:
			e.finish(DeliveryRejected, slog.LevelWarn, "SMTP server rejected the notification; not retrying", "err", err, "code", err.code)
			return
		case err.kind == attemptRefused:
			e.finish(DeliveryFailed, slog.LevelError, "email not sent: the connection to the SMTP server would not be secure; not retrying", "err", err)
			return
		case attempt >= e.opts.MaxAttempts:
			e.finish(DeliveryFailed, slog.LevelWarn, "email delivery failed; giving up", "err", err, "code", err.code, "attempts", attempt)
			return
		}
		e.retries.Add(1)
		e.log.Debug("email delivery failed; retrying", "server", e.opts.Server, "err", err, "code", err.code, "in", delay)
		t := e.clock.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			e.dropped.Add(1)
			return
		case <-t.C():
		}
		delay = min(delay*2, e.opts.MaxBackoff)
	}
}

func (e *Email) finish(result string, level slog.Level, msg string, attrs ...any) {
	e.deliveries[result].Add(1)
	e.log.Log(context.Background(), level, msg, append([]any{"server", e.opts.Server}, attrs...)...)
	if e.onDelivered != nil {
		e.onDelivered(result)
	}
}

// attemptKind says what one failed attempt means for the notification.
type attemptKind int

const (
	attemptRetry    attemptKind = iota // 4xx, connection or file error: try again
	attemptRejected                    // 5xx: the server said no for good
	attemptRefused                     // not secure: no STARTTLS, bad certificate, no AUTH PLAIN
)

// attemptError is one failed attempt, its text safe to log: it names the
// SMTP step, and any secret a server echoed is cut out of it.
type attemptError struct {
	kind attemptKind
	code int // the SMTP reply code, 0 without one
	msg  string
}

func (a *attemptError) Error() string { return a.msg }

// send makes one attempt: connect, secure, authenticate, send, quit.
func (e *Email) send(ctx context.Context, msg []byte) *attemptError {
	var secrets []string
	fail := func(step string, err error) *attemptError {
		a := classify(step, err)
		for _, s := range secrets {
			a.msg = strings.ReplaceAll(a.msg, s, "[redacted]")
		}
		return a
	}
	conf, err := e.tlsConfig()
	if err != nil {
		return fail("CA file", err)
	}
	var pw string
	if e.opts.User != "" {
		if pw, err = e.password(); err != nil {
			return fail("password file", err)
		}
		// What a server could echo: the password, and the AUTH PLAIN
		// response that carries it.
		secrets = []string{
			base64.StdEncoding.EncodeToString([]byte("\x00" + e.opts.User + "\x00" + pw)),
			base64.StdEncoding.EncodeToString([]byte(pw)),
			pw,
		}
	}

	actx, cancel := context.WithTimeout(ctx, e.opts.Timeout)
	defer cancel()
	dialer := &net.Dialer{}
	var conn net.Conn
	if e.opts.TLS == EmailTLS {
		conn, err = (&tls.Dialer{NetDialer: dialer, Config: conf}).DialContext(actx, "tcp", e.opts.Server)
	} else {
		conn, err = dialer.DialContext(actx, "tcp", e.opts.Server)
	}
	if err != nil {
		return fail("connect", err)
	}
	// net/smtp has no context: the deadline bounds the dialogue, and the
	// end of ctx cuts it short.
	deadline, _ := actx.Deadline()
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(actx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	c, err := smtp.NewClient(conn, e.host)
	if err != nil {
		conn.Close()
		return fail("greeting", err)
	}
	defer c.Close()
	if err := c.Hello(e.helo); err != nil {
		return fail("EHLO", err)
	}
	if e.opts.TLS == EmailSTARTTLS {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return refuse("STARTTLS: the server does not offer STARTTLS; refusing to send the message and credentials in plain text")
		}
		if err := c.StartTLS(conf); err != nil {
			return fail("STARTTLS", err)
		}
	}
	if e.opts.User != "" {
		if ok, mechs := c.Extension("AUTH"); !ok || !hasWordFold(mechs, "PLAIN") {
			return refuse(fmt.Sprintf("AUTH: the server does not offer AUTH PLAIN over TLS (mechanisms offered: %q)", mechs))
		}
		if err := c.Auth(smtp.PlainAuth("", e.opts.User, pw, e.host)); err != nil {
			return fail("AUTH", err)
		}
	}
	if err := c.Mail(e.from.Address); err != nil {
		return fail("MAIL FROM", err)
	}
	for _, to := range e.to {
		if err := c.Rcpt(to.Address); err != nil {
			return fail("RCPT TO", err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return fail("DATA", err)
	}
	if _, err := w.Write(msg); err != nil {
		return fail("message", err)
	}
	if err := w.Close(); err != nil {
		return fail("message", err)
	}
	// The server has taken the message; a failed QUIT changes nothing.
	_ = c.Quit()
	return nil
}

// classify maps an error of one SMTP step to what it means for retries.
func classify(step string, err error) *attemptError {
	var reply *textproto.Error
	var cert *tls.CertificateVerificationError
	switch {
	case errors.As(err, &reply):
		a := &attemptError{kind: attemptRetry, code: reply.Code, msg: fmt.Sprintf("%s: %d %s", step, reply.Code, reply.Msg)}
		if reply.Code >= 500 {
			a.kind = attemptRejected
		}
		return a
	case errors.As(err, &cert):
		return &attemptError{kind: attemptRefused, msg: fmt.Sprintf("%s: the server's certificate is not trusted for this server: %v", step, cert.Err)}
	}
	return &attemptError{kind: attemptRetry, msg: step + ": " + err.Error()}
}

// refuse is an attempt this package will not make: it would not be secure.
func refuse(msg string) *attemptError {
	return &attemptError{kind: attemptRefused, msg: msg}
}

// hasWordFold reports whether the space-separated list holds w, in any case.
func hasWordFold(list, w string) bool {
	for _, f := range strings.Fields(list) {
		if strings.EqualFold(f, w) {
			return true
		}
	}
	return false
}

func newMessageID(from *mail.Address) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	domain := "linkgate.invalid"
	if i := strings.LastIndexByte(from.Address, '@'); i >= 0 && i+1 < len(from.Address) {
		domain = from.Address[i+1:]
	}
	return "<" + hex.EncodeToString(b[:]) + ".linkgate@" + domain + ">"
}

// maxSubject bounds the subject line (before encoding).
const maxSubject = 200

// emailSubject is the webhook's title with the failing checks' names.
func emailSubject(st *State, host string) string {
	s := describeTransition(st, host).Title
	var failing []string
	for _, c := range st.Checks {
		if !c.OK {
			failing = append(failing, c.Name)
		}
	}
	if len(failing) > 0 {
		s += " (failing: " + strings.Join(failing, ", ") + ")"
	}
	return truncate(strings.Map(noControl, s), maxSubject)
}

func noControl(r rune) rune {
	if unicode.IsControl(r) {
		return ' '
	}
	return r
}

// emailBody is plain text: what happened, when, and every check's line in
// the "[+]name ok" / "[-]name failed: reason" form of /ready?verbose.
func emailBody(st *State, host string) string {
	n := describeTransition(st, host)
	var b strings.Builder
	state := "READY"
	if !st.Ready {
		state = "NOT READY"
	}
	fmt.Fprintf(&b, "linkgate on %s turned %s at %s.\n\n", host, state, n.Timestamp)
	fmt.Fprintf(&b, "%s\n\n", n.Message)
	if failing := st.Failing(); len(failing) > 0 {
		b.WriteString("Failing checks:\n")
		for _, c := range st.Checks {
			if c.OK {
				continue
			}
			fmt.Fprintf(&b, "  %s: %s", c.Name, c.Reason)
			if c.Permanent {
				b.WriteString(" (permanent: will not clear by itself)")
			}
			fmt.Fprintf(&b, "\n    failing since %s\n", c.Since.UTC().Format(time.RFC3339))
		}
		b.WriteString("\n")
	}
	if len(st.Checks) > 0 {
		b.WriteString("Checks:\n")
		for _, c := range st.Checks {
			if c.OK {
				fmt.Fprintf(&b, "  [+]%s ok\n", c.Name)
			} else {
				fmt.Fprintf(&b, "  [-]%s failed: %s\n", c.Name, c.Reason)
			}
		}
		b.WriteString("\n")
	}
	if st.Ready {
		b.WriteString("Migrations gated on this host may start.\n")
	} else {
		b.WriteString("Migrations gated on this host wait until it is ready again.\n")
	}
	fmt.Fprintf(&b, "Level: %s\n\n-- \nlinkgate readiness gate on %s\n", n.Level, host)
	return b.String()
}

// emailMessage is the whole RFC 5322 message: headers, then the body in
// quoted-printable, so that any reason or host name travels as 7-bit
// lines of legal length.
func emailMessage(st *State, host string, from *mail.Address, to []*mail.Address, now time.Time, msgID string) []byte {
	var b bytes.Buffer
	header := func(k, v string) { b.WriteString(k + ": " + v + "\r\n") }
	rcpts := make([]string, len(to))
	for i, a := range to {
		rcpts[i] = a.String()
	}
	state := "ready"
	if !st.Ready {
		state = "not-ready"
	}
	header("From", from.String())
	header("To", strings.Join(rcpts, ",\r\n ")) // folded: one recipient a line
	header("Subject", mime.QEncoding.Encode("utf-8", emailSubject(st, host)))
	header("Date", now.Format(time.RFC1123Z))
	header("Message-ID", msgID)
	header("MIME-Version", "1.0")
	header("Content-Type", "text/plain; charset=utf-8")
	header("Content-Transfer-Encoding", "quoted-printable")
	header("Auto-Submitted", "auto-generated") // RFC 3834: no vacation replies
	header("X-Linkgate-Host", mime.QEncoding.Encode("utf-8", host))
	header("X-Linkgate-State", state)
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	_, _ = qp.Write([]byte(emailBody(st, host)))
	_ = qp.Close()
	return b.Bytes()
}
