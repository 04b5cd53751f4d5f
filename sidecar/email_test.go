package sidecar

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/big"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// testCert is a self-signed certificate, its own CA.
type testCert struct {
	tls    tls.Certificate
	caFile string // its PEM, for EmailOptions.CAFile
}

// newTestCert makes a certificate for the given DNS names and IPs.
func newTestCert(t *testing.T, dnsNames []string, ips ...net.IP) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "linkgate test SMTP"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              dnsNames,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return testCert{tls: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, caFile: caFile}
}

func loopbackCert(t *testing.T) testCert {
	return newTestCert(t, []string{"localhost"}, net.IPv4(127, 0, 0, 1))
}

// smtpTest configures a real SMTP server (emersion/go-smtp) on loopback.
type smtpTest struct {
	mode string    // "starttls" (STARTTLS offered), "tls" (implicit) or "plain" (no TLS at all)
	cert testCert  // for starttls and tls
	user string    // if set, AUTH PLAIN is required with pass
	pass string    //
	mail []error   // the reply to each MAIL FROM in turn (nil: accept); then accept
	hold chan bool // if set, the first DATA waits for a value on it
	// noAuth: the server does not offer AUTH at all.
	noAuth bool
}

type receivedMail struct {
	from string
	to   []string
	data string
	user string // authenticated as
	tls  bool
}

// smtpServer records what it was sent.
type smtpServer struct {
	smtpTest
	addr string

	mu        sync.Mutex
	pass      string   // accepted password, changeable (rotation)
	authTries []string // "user:password" of every AUTH
	mailCmds  int
	msgs      []receivedMail
	arrived   chan struct{} // closed when the held DATA arrives
}

func startSMTP(t *testing.T, cfg smtpTest) *smtpServer {
	t.Helper()
	s := &smtpServer{smtpTest: cfg, pass: cfg.pass, arrived: make(chan struct{})}
	srv := gosmtp.NewServer(gosmtp.BackendFunc(func(c *gosmtp.Conn) (gosmtp.Session, error) {
		ss := &smtpSession{srv: s, conn: c}
		if cfg.noAuth {
			return noAuthSession{ss}, nil
		}
		return ss, nil
	}))
	srv.Domain = "mail.test"
	srv.ErrorLog = log.New(io.Discard, "", 0)
	srv.ReadTimeout, srv.WriteTimeout = hang, hang
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	switch cfg.mode {
	case "starttls":
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cfg.cert.tls}}
	case "tls":
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cfg.cert.tls}})
	case "plain":
		// Tempt the client: AUTH offered in plain text.
		srv.AllowInsecureAuth = true
	default:
		t.Fatalf("mode %q", cfg.mode)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), hang)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("SMTP server shutdown: %v", err)
			srv.Close()
		}
		<-served
	})
	return s
}

func (s *smtpServer) setPassword(pw string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pass = pw
}

func (s *smtpServer) received() []receivedMail {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]receivedMail(nil), s.msgs...)
}

func (s *smtpServer) counts() (auths, mails int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.authTries), s.mailCmds
}

type smtpSession struct {
	srv  *smtpServer
	conn *gosmtp.Conn
	user string
	from string
	to   []string
}

func (ss *smtpSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (ss *smtpSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		s := ss.srv
		s.mu.Lock()
		defer s.mu.Unlock()
		s.authTries = append(s.authTries, user+":"+pass)
		if user != s.user || pass != s.pass {
			// A careless server that echoes what it was given.
			return &gosmtp.SMTPError{Code: 535, EnhancedCode: gosmtp.EnhancedCode{5, 7, 8},
				Message: fmt.Sprintf("authentication failed for %s with password %s", user, pass)}
		}
		ss.user = user
		return nil
	}), nil
}

func (ss *smtpSession) Mail(from string, _ *gosmtp.MailOptions) error {
	s := ss.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.user != "" && ss.user == "" {
		return gosmtp.ErrAuthRequired
	}
	s.mailCmds++
	if n := s.mailCmds - 1; n < len(s.mail) && s.mail[n] != nil {
		return s.mail[n]
	}
	ss.from = from
	return nil
}

func (ss *smtpSession) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	ss.to = append(ss.to, to)
	return nil
}

func (ss *smtpSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s := ss.srv
	s.mu.Lock()
	first := len(s.msgs) == 0
	_, isTLS := ss.conn.TLSConnectionState()
	s.msgs = append(s.msgs, receivedMail{from: ss.from, to: ss.to, data: string(b), user: ss.user, tls: isTLS})
	s.mu.Unlock()
	if first && s.hold != nil {
		close(s.arrived)
		<-s.hold
	}
	return nil
}

func (ss *smtpSession) Reset()        { ss.from, ss.to = "", nil }
func (ss *smtpSession) Logout() error { return nil }

// noAuthSession hides the AUTH methods of smtpSession.
type noAuthSession struct{ ss *smtpSession }

func (n noAuthSession) Mail(from string, o *gosmtp.MailOptions) error { return n.ss.Mail(from, o) }
func (n noAuthSession) Rcpt(to string, o *gosmtp.RcptOptions) error   { return n.ss.Rcpt(to, o) }
func (n noAuthSession) Data(r io.Reader) error                        { return n.ss.Data(r) }
func (n noAuthSession) Reset()                                        { n.ss.Reset() }
func (n noAuthSession) Logout() error                                 { return n.ss.Logout() }

// switchGate is a real gate over two fake checks, uplink and storage,
// that the test fails and heals; uplink starts failing.
type switchGate struct {
	*Gate
	mu      sync.Mutex
	errs    map[string]error
	trigger *fakeVCenter // its change signal makes the gate re-evaluate
}

func newSwitchGate(t *testing.T) *switchGate {
	t.Helper()
	sg := &switchGate{errs: map[string]error{"uplink": errors.New("carrier lost on eth1")}, trigger: newFakeVCenter()}
	check := func(name string) Check {
		return NewCheck(name, func(context.Context, *Input) error {
			sg.mu.Lock()
			defer sg.mu.Unlock()
			return sg.errs[name]
		})
	}
	sg.Gate = startGate(t, GateOptions{Snapshots: healthySnapshot(), VCenter: sg.trigger, Checks: []Check{check("uplink"), check("storage")}})
	waitState(t, sg.Gate, "not ready", isNotReady)
	return sg
}

// set makes the named check fail with err (nil: pass) and waits for the
// gate to reach the verdict that follows.
func (sg *switchGate) set(t *testing.T, name string, err error) *State {
	t.Helper()
	sg.mu.Lock()
	sg.errs[name] = err
	ready := true
	for _, e := range sg.errs {
		ready = ready && e == nil
	}
	sg.mu.Unlock()
	sg.trigger.set()
	if ready {
		return waitState(t, sg.Gate, "ready", isReady)
	}
	return waitState(t, sg.Gate, name+" failing", func(st *State) bool {
		c, ok := st.Check(name)
		return !st.Ready && ok && !c.OK
	})
}

// logBuffer is a debug-level logger whose output the test reads.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(lockedWriter{&l.mu, &l.buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// startEmail runs an Email on g until the test ends and returns a channel
// of delivery results.
func startEmail(t *testing.T, g *Gate, o EmailOptions) (*Email, <-chan string) {
	t.Helper()
	if o.From == "" {
		o.From = "linkgate <linkgate@example.com>"
	}
	if o.To == nil {
		o.To = []string{"ops@example.com", "Migrations <migrations@example.com>"}
	}
	if o.Hostname == "" {
		o.Hostname = "migrate-01"
	}
	if o.Backoff == 0 {
		o.Backoff = time.Millisecond
	}
	if o.Timeout == 0 {
		o.Timeout = hang
	}
	e, err := NewEmail(g, o)
	if err != nil {
		t.Fatal(err)
	}
	results := make(chan string, 16)
	e.onDelivered = func(r string) { results <- r }
	run(t, e.Run)
	return e, results
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// parsedMail is a received message, decoded.
type parsedMail struct {
	header  mail.Header
	subject string
	body    string
}

func parseMail(t *testing.T, m receivedMail) parsedMail {
	t.Helper()
	msg, err := mail.ReadMessage(strings.NewReader(m.data))
	if err != nil {
		t.Fatalf("received message does not parse: %v\n%s", err, m.data)
	}
	subject, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
	if err != nil {
		t.Fatal(err)
	}
	if msg.Header.Get("Content-Transfer-Encoding") != "quoted-printable" {
		t.Fatalf("transfer encoding %q", msg.Header.Get("Content-Transfer-Encoding"))
	}
	body, err := io.ReadAll(quotedprintable.NewReader(msg.Body))
	if err != nil {
		t.Fatal(err)
	}
	for i, line := range strings.Split(m.data, "\r\n") {
		if len(line) > 78 {
			t.Errorf("line %d longer than 78 characters: %q", i+1, line)
		}
	}
	return parsedMail{header: msg.Header, subject: subject, body: strings.ReplaceAll(string(body), "\r\n", "\n")}
}

func emailMetrics(e *Email, success, rejected, failed, retries, dropped int) string {
	return fmt.Sprintf(`
# HELP linkgate_email_deliveries_total Email notifications by final result: success (accepted by the SMTP server), rejected (5xx reply, not retried), failed (gave up after retries, or refused to send over a connection that would not be secure).
# TYPE linkgate_email_deliveries_total counter
linkgate_email_deliveries_total{result="failed"} %d
linkgate_email_deliveries_total{result="rejected"} %d
linkgate_email_deliveries_total{result="success"} %d
# HELP linkgate_email_dropped_total Email notifications dropped undelivered: queue full (oldest dropped) or shutdown.
# TYPE linkgate_email_dropped_total counter
linkgate_email_dropped_total %d
# HELP linkgate_email_queue_length Email notifications waiting to be delivered.
# TYPE linkgate_email_queue_length gauge
linkgate_email_queue_length 0
# HELP linkgate_email_retries_total Email delivery attempts that were retried after a 4xx reply or a connection error.
# TYPE linkgate_email_retries_total counter
linkgate_email_retries_total %d
`, failed, rejected, success, dropped, retries)
}

func checkEmailMetrics(t *testing.T, e *Email, success, rejected, failed, retries, dropped int) {
	t.Helper()
	if err := testutil.CollectAndCompare(e, strings.NewReader(emailMetrics(e, success, rejected, failed, retries, dropped))); err != nil {
		t.Error(err)
	}
}

// gathered is the metrics' text, for a search for secrets.
func gathered(t *testing.T, c prometheus.Collector) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(mfs)
}

func TestEmailSTARTTLSWithAuth(t *testing.T) {
	const password = "s3cr3t-Pa55word"
	cert := loopbackCert(t)
	srv := startSMTP(t, smtpTest{mode: "starttls", cert: cert, user: "linkgate", pass: password})
	sg := newSwitchGate(t)
	clk := newFakeClock()
	var logs logBuffer
	pwFile := writeFile(t, password+"\n")
	e, results := startEmail(t, sg.Gate, EmailOptions{
		Server: srv.addr, CAFile: cert.caFile, User: "linkgate", PasswordFile: pwFile,
		Clock: clk, Logger: logs.logger(),
	})

	// Up: uplink heals.
	sg.set(t, "uplink", nil)
	if r := result(t, results); r != DeliverySuccess {
		t.Fatalf("result %s, want success\nlogs:\n%s", r, logs.String())
	}
	// Down: storage fails for good.
	down := sg.set(t, "storage", fmt.Errorf("%w: iSCSI target 10.0.0.5:3260 unreachable", ErrPermanent))
	if r := result(t, results); r != DeliverySuccess {
		t.Fatalf("result %s, want success\nlogs:\n%s", r, logs.String())
	}

	msgs := srv.received()
	if len(msgs) != 2 {
		t.Fatalf("%d messages, want 2", len(msgs))
	}
	for _, m := range msgs {
		if !m.tls || m.user != "linkgate" || m.from != "linkgate@example.com" ||
			strings.Join(m.to, ",") != "ops@example.com,migrations@example.com" {
			t.Errorf("envelope: tls %v, user %q, from %q, to %v", m.tls, m.user, m.from, m.to)
		}
	}
	up := parseMail(t, msgs[0])
	if up.subject != "linkgate ready on migrate-01" || up.header.Get("X-Linkgate-State") != "ready" ||
		!strings.Contains(up.body, "linkgate on migrate-01 turned READY at ") ||
		!strings.Contains(up.body, "[+]uplink ok\n") || !strings.Contains(up.body, "[+]storage ok\n") {
		t.Errorf("ready message: subject %q\n%s", up.subject, up.body)
	}

	m := parseMail(t, msgs[1])
	reason := "permanent: iSCSI target 10.0.0.5:3260 unreachable"
	when := down.Since.UTC().Format(time.RFC3339)
	if m.subject != "linkgate not ready on migrate-01 (failing: storage)" {
		t.Errorf("subject %q", m.subject)
	}
	if m.header.Get("From") != `"linkgate" <linkgate@example.com>` ||
		m.header.Get("To") != `<ops@example.com>, "Migrations" <migrations@example.com>` ||
		m.header.Get("Date") != clk.Now().Format(time.RFC1123Z) ||
		m.header.Get("X-Linkgate-Host") != "migrate-01" || m.header.Get("X-Linkgate-State") != "not-ready" ||
		m.header.Get("Auto-Submitted") != "auto-generated" || !strings.HasSuffix(m.header.Get("Message-ID"), "@example.com>") {
		t.Errorf("headers: %v", m.header)
	}
	for _, want := range []string{
		"linkgate on migrate-01 turned NOT READY at " + when + ".",
		"Failing checks:\n  storage: " + reason + " (permanent: will not clear by itself)\n",
		"[+]uplink ok\n",
		"[-]storage failed: " + reason + "\n",
		"Level: error\n",
	} {
		if !strings.Contains(m.body, want) {
			t.Errorf("body lacks %q:\n%s", want, m.body)
		}
	}
	checkEmailMetrics(t, e, 2, 0, 0, 0, 0)

	// Rotation: the file is read at every attempt.
	const rotated = "n3w-r0tated-Secret"
	srv.setPassword(rotated)
	if err := os.WriteFile(pwFile, []byte(rotated), 0o600); err != nil {
		t.Fatal(err)
	}
	sg.set(t, "storage", nil)
	if r := result(t, results); r != DeliverySuccess {
		t.Fatalf("after rotation: result %s, want success\nlogs:\n%s", r, logs.String())
	}

	// No password anywhere but in the AUTH exchange.
	out := logs.String()
	metricsText := gathered(t, e)
	for _, secret := range []string{password, rotated} {
		for _, m := range srv.received() {
			if strings.Contains(m.data, secret) {
				t.Errorf("message holds the password:\n%s", m.data)
			}
		}
		if strings.Contains(out, secret) || strings.Contains(metricsText, secret) {
			t.Errorf("password in logs or metrics:\n%s\n%s", out, metricsText)
		}
	}
}

func TestEmailImplicitTLS(t *testing.T) {
	cert := loopbackCert(t)
	srv := startSMTP(t, smtpTest{mode: "tls", cert: cert})
	sg := newSwitchGate(t)
	e, results := startEmail(t, sg.Gate, EmailOptions{Server: srv.addr, TLS: EmailTLS, CAFile: cert.caFile})
	sg.set(t, "uplink", nil)
	if r := result(t, results); r != DeliverySuccess {
		t.Fatalf("result %s, want success", r)
	}
	msgs := srv.received()
	if len(msgs) != 1 || !msgs[0].tls || msgs[0].user != "" {
		t.Fatalf("received %+v", msgs)
	}
	if m := parseMail(t, msgs[0]); m.subject != "linkgate ready on migrate-01" {
		t.Errorf("subject %q", m.subject)
	}
	checkEmailMetrics(t, e, 1, 0, 0, 0, 0)
}

func TestEmailPermanentRejection(t *testing.T) {
	const password = "echo-me-Pa55word"
	for _, tc := range []struct {
		name     string
		cfg      smtpTest
		wantLog  string
		authTry  int
		mailCmds int
	}{
		{
			name:    "550 to MAIL FROM",
			cfg:     smtpTest{user: "linkgate", pass: password, mail: []error{&gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 7, 1}, Message: "sender not allowed"}}},
			wantLog: `err="MAIL FROM: 550 5.7.1 sender not allowed" code=550`,
			authTry: 1, mailCmds: 1,
		},
		{
			// The server echoes the password it was sent: it is cut out.
			name:    "535 to AUTH, echoing the password",
			cfg:     smtpTest{user: "linkgate", pass: "something else"},
			wantLog: `err="AUTH: 535 5.7.8 authentication failed for linkgate with password [redacted]" code=535`,
			authTry: 1, mailCmds: 0,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cert := loopbackCert(t)
			tc.cfg.mode, tc.cfg.cert = "starttls", cert
			srv := startSMTP(t, tc.cfg)
			sg := newSwitchGate(t)
			var logs logBuffer
			e, results := startEmail(t, sg.Gate, EmailOptions{
				Server: srv.addr, CAFile: cert.caFile, User: "linkgate", PasswordFile: writeFile(t, password),
				Logger: logs.logger(),
			})
			sg.set(t, "uplink", nil)
			if r := result(t, results); r != DeliveryRejected {
				t.Fatalf("result %s, want rejected", r)
			}
			if auths, mails := srv.counts(); auths != tc.authTry || mails != tc.mailCmds || len(srv.received()) != 0 {
				t.Errorf("server saw %d AUTH, %d MAIL, %d messages; want %d, %d, 0 (no retry)", auths, mails, len(srv.received()), tc.authTry, tc.mailCmds)
			}
			checkEmailMetrics(t, e, 0, 1, 0, 0, 0)
			out := logs.String()
			if !strings.Contains(out, "level=WARN msg=\"SMTP server rejected the notification; not retrying\"") ||
				!strings.Contains(out, tc.wantLog) || strings.Contains(out, password) || strings.Contains(out, "failed; retrying") {
				t.Errorf("logs:\n%s", out)
			}
		})
	}
}

func TestEmailTransientRetried(t *testing.T) {
	cert := loopbackCert(t)
	busy := &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
	srv := startSMTP(t, smtpTest{mode: "starttls", cert: cert, mail: []error{busy, busy}})
	sg := newSwitchGate(t)
	clk := newFakeClock()
	e, results := startEmail(t, sg.Gate, EmailOptions{Server: srv.addr, CAFile: cert.caFile, Clock: clk, Backoff: time.Second})
	sg.set(t, "uplink", nil)
	// The backoff doubles: 1s, then 2s.
	for _, want := range []time.Duration{time.Second, 2 * time.Second} {
		if d := clk.NextTimer(t, hang); d != want {
			t.Fatalf("retry after %s, want %s", d, want)
		}
		clk.Advance(want)
	}
	if r := result(t, results); r != DeliverySuccess {
		t.Fatalf("result %s, want success", r)
	}
	if _, mails := srv.counts(); mails != 3 || len(srv.received()) != 1 {
		t.Errorf("%d MAIL commands and %d messages, want 3 and 1", mails, len(srv.received()))
	}
	checkEmailMetrics(t, e, 1, 0, 0, 2, 0)
}

func TestEmailConnectionErrorRetriedThenFailed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // refused from now on
	sg := newSwitchGate(t)
	var logs logBuffer
	e, results := startEmail(t, sg.Gate, EmailOptions{Server: addr, MaxAttempts: 3, Logger: logs.logger()})
	sg.set(t, "uplink", nil)
	if r := result(t, results); r != DeliveryFailed {
		t.Fatalf("result %s, want failed", r)
	}
	checkEmailMetrics(t, e, 0, 0, 1, 2, 0)
	if out := logs.String(); !strings.Contains(out, `msg="email delivery failed; giving up"`) || !strings.Contains(out, "connection refused") {
		t.Errorf("logs:\n%s", out)
	}
}

func TestEmailQueueDropsOldest(t *testing.T) {
	cert := loopbackCert(t)
	hold := make(chan bool)
	srv := startSMTP(t, smtpTest{mode: "starttls", cert: cert, hold: hold})
	sg := newSwitchGate(t)
	dropped := make(chan struct{}, 4)
	e, err := NewEmail(sg.Gate, EmailOptions{Server: srv.addr, CAFile: cert.caFile, From: "linkgate@example.com",
		To: []string{"ops@example.com"}, Hostname: "migrate-01", QueueSize: 1, Timeout: hang})
	if err != nil {
		t.Fatal(err)
	}
	results := make(chan string, 4)
	e.onDelivered = func(r string) { results <- r }
	e.onDropped = func() { dropped <- struct{}{} }
	run(t, e.Run)
	defer close(hold)

	sg.set(t, "uplink", nil) // 1: in flight, held by the server
	recv(t, srv.arrived, "the first message")
	sg.set(t, "uplink", errors.New("carrier lost on eth1")) // 2: queued
	sg.set(t, "uplink", nil)                                // 3: pushes 2 out
	recv(t, dropped, "a dropped notification")
	hold <- true
	for range 2 {
		if r := result(t, results); r != DeliverySuccess {
			t.Fatalf("result %s, want success", r)
		}
	}
	var subjects []string
	for _, m := range srv.received() {
		subjects = append(subjects, parseMail(t, m).subject)
	}
	if got := strings.Join(subjects, " | "); got != "linkgate ready on migrate-01 | linkgate ready on migrate-01" {
		t.Errorf("delivered %q, want the first and the newest transition (both ready)", got)
	}
	checkEmailMetrics(t, e, 2, 0, 0, 0, 1)
}

func TestEmailShutdownDropsPending(t *testing.T) {
	cert := loopbackCert(t)
	hold := make(chan bool)
	srv := startSMTP(t, smtpTest{mode: "starttls", cert: cert, hold: hold})
	defer close(hold)
	sg := newSwitchGate(t)
	dropped := make(chan struct{}, 4)
	e, err := NewEmail(sg.Gate, EmailOptions{Server: srv.addr, CAFile: cert.caFile, From: "linkgate@example.com",
		To: []string{"ops@example.com"}, Hostname: "migrate-01", QueueSize: 1, Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	e.onDropped = func() { dropped <- struct{}{} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()

	sg.set(t, "uplink", nil) // in flight, held by the server
	recv(t, srv.arrived, "the first message")
	sg.set(t, "uplink", errors.New("carrier lost on eth1")) // queued
	sg.set(t, "uplink", nil)                                // queued, the one before dropped
	recv(t, dropped, "a dropped notification")
	// The attempt in flight waits for the server's final reply, with an
	// hour's timeout: the end of ctx must cut it short.
	cancel()
	if err := recv(t, done, "Run's return"); err != nil {
		t.Fatal(err)
	}
	checkEmailMetrics(t, e, 0, 0, 0, 0, 3) // the overflow, the one in flight, the one queued
}

func TestEmailUntrustedCertificateRefused(t *testing.T) {
	other := loopbackCert(t)
	elsewhere := newTestCert(t, []string{"mail.example"})
	for _, tc := range []struct {
		name   string
		mode   string
		cert   testCert
		caFile string
		want   string
	}{
		{"STARTTLS, unknown authority", "starttls", loopbackCert(t), other.caFile, "certificate signed by unknown authority"},
		{"implicit TLS, unknown authority", "tls", loopbackCert(t), other.caFile, "certificate signed by unknown authority"},
		{"STARTTLS, system roots", "starttls", loopbackCert(t), "", "certificate signed by unknown authority"},
		{"STARTTLS, trusted but for another name", "starttls", elsewhere, elsewhere.caFile, "x509: cannot validate certificate for 127.0.0.1 because it doesn't contain any IP SANs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startSMTP(t, smtpTest{mode: tc.mode, cert: tc.cert, user: "linkgate", pass: "pw-never-sent"})
			sg := newSwitchGate(t)
			var logs logBuffer
			e, results := startEmail(t, sg.Gate, EmailOptions{Server: srv.addr, TLS: tc.mode, CAFile: tc.caFile,
				User: "linkgate", PasswordFile: writeFile(t, "pw-never-sent"), Logger: logs.logger()})
			sg.set(t, "uplink", nil)
			if r := result(t, results); r != DeliveryFailed {
				t.Fatalf("result %s, want failed", r)
			}
			if auths, mails := srv.counts(); auths != 0 || mails != 0 {
				t.Errorf("server saw %d AUTH and %d MAIL", auths, mails)
			}
			checkEmailMetrics(t, e, 0, 0, 1, 0, 0)
			if out := logs.String(); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "the server's certificate is not trusted for this server") ||
				!strings.Contains(out, tc.want) {
				t.Errorf("logs:\n%s", out)
			}
		})
	}
}

func TestEmailNoSTARTTLSRefused(t *testing.T) {
	srv := startSMTP(t, smtpTest{mode: "plain", user: "linkgate", pass: "pw-never-sent"})
	sg := newSwitchGate(t)
	var logs logBuffer
	e, results := startEmail(t, sg.Gate, EmailOptions{Server: srv.addr, User: "linkgate",
		PasswordFile: writeFile(t, "pw-never-sent"), Logger: logs.logger()})
	sg.set(t, "uplink", nil)
	if r := result(t, results); r != DeliveryFailed {
		t.Fatalf("result %s, want failed", r)
	}
	if auths, mails := srv.counts(); auths != 0 || mails != 0 || len(srv.received()) != 0 {
		t.Errorf("server saw %d AUTH and %d MAIL in plain text", auths, mails)
	}
	checkEmailMetrics(t, e, 0, 0, 1, 0, 0)
	out := logs.String()
	if !strings.Contains(out, `level=ERROR msg="email not sent: the connection to the SMTP server would not be secure; not retrying"`) ||
		!strings.Contains(out, "STARTTLS: the server does not offer STARTTLS; refusing to send the message and credentials in plain text") {
		t.Errorf("logs:\n%s", out)
	}
}

func TestEmailNoAuthPlainRefused(t *testing.T) {
	// STARTTLS, but no AUTH: with a user configured, nothing is sent
	// unauthenticated.
	cert := loopbackCert(t)
	srv := startSMTP(t, smtpTest{mode: "starttls", cert: cert, noAuth: true})
	sg := newSwitchGate(t)
	var logs logBuffer
	e, results := startEmail(t, sg.Gate, EmailOptions{Server: srv.addr, CAFile: cert.caFile, User: "linkgate",
		PasswordFile: writeFile(t, "pw-never-sent"), Logger: logs.logger()})
	sg.set(t, "uplink", nil)
	if r := result(t, results); r != DeliveryFailed {
		t.Fatalf("result %s, want failed", r)
	}
	if _, mails := srv.counts(); mails != 0 {
		t.Errorf("server saw %d MAIL", mails)
	}
	checkEmailMetrics(t, e, 0, 0, 1, 0, 0)
	if out := logs.String(); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "AUTH: the server does not offer AUTH PLAIN over TLS") {
		t.Errorf("logs:\n%s", out)
	}
}

func TestNewEmailValidation(t *testing.T) {
	const secret = "hunter2-Secret"
	sg := newSwitchGate(t)
	pw := writeFile(t, secret+"\n")
	good := EmailOptions{Server: "smtp.example.com:587", From: "linkgate@example.com", To: []string{"ops@example.com"}, User: "u", PasswordFile: pw, Hostname: "migrate-01"}
	if _, err := NewEmail(sg.Gate, good); err != nil {
		t.Fatalf("valid options: %v", err)
	}
	for _, tc := range []struct {
		name  string
		edit  func(*EmailOptions)
		field string
		want  string
	}{
		{"no port", func(o *EmailOptions) { o.Server = "smtp.example.com" }, "Server", `"smtp.example.com": want host:port`},
		{"port 0", func(o *EmailOptions) { o.Server = "smtp.example.com:0" }, "Server", `port "0": want 1 to 65535`},
		{"credentials in server", func(o *EmailOptions) { o.Server = "u:" + secret + "@smtp.example.com:587" }, "Server", "smtp.example.com:587: want host:port; credentials go in the user and password file"},
		{"unknown TLS mode", func(o *EmailOptions) { o.TLS = "none" }, "TLS", `"none": want starttls or tls`},
		{"bad from", func(o *EmailOptions) { o.From = "not an address" }, "From", `"not an address": mail: `},
		{"no recipient", func(o *EmailOptions) { o.To = nil }, "To", "no recipient"},
		{"bad recipient", func(o *EmailOptions) { o.To = []string{"ops@example.com", "ops"} }, "To", "recipient 2: "},
		{"header injection in hostname", func(o *EmailOptions) { o.Hostname = "h\r\nBcc: x@evil.example" }, "Hostname", "want a name without control characters"},
		{"user without password file", func(o *EmailOptions) { o.PasswordFile = "" }, "PasswordFile", "a user needs a password file"},
		{"password file without user", func(o *EmailOptions) { o.User = "" }, "User", "a password file needs a user"},
		{"missing password file", func(o *EmailOptions) { o.PasswordFile = "/nonexistent/pw" }, "PasswordFile", "open /nonexistent/pw: no such file or directory"},
		{"empty password file", func(o *EmailOptions) { o.PasswordFile = writeFile(t, "\n") }, "PasswordFile", "is empty or holds only white space; want a file holding the password"},
		{"password file is a device", func(o *EmailOptions) { o.PasswordFile = "/dev/zero" }, "PasswordFile", "/dev/zero is a character device, not a regular file"},
		{"CA file without PEM", func(o *EmailOptions) { o.CAFile = pw }, "CAFile", "no PEM certificate in " + pw},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			tc.edit(&o)
			_, err := NewEmail(sg.Gate, o)
			var ce *EmailConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field || !strings.Contains(ce.Err.Error(), tc.want) ||
				err.Error() != "email "+ce.Field+": "+ce.Err.Error() {
				t.Fatalf("err %v, want field %s and %q", err, tc.field, tc.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error shows the password: %v", err)
			}
			if verr := o.Validate(); verr == nil || verr.Error() != err.Error() {
				t.Errorf("Validate: %v, want %v", verr, err)
			}
		})
	}
	if err := good.Validate(); err != nil {
		t.Errorf("Validate of valid options: %v", err)
	}
}

func TestEmailMessageEncoding(t *testing.T) {
	st := &State{Version: 3, Since: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), Checks: []CheckStatus{
		{CheckResult: CheckResult{Name: "links", OK: true}},
		{CheckResult: CheckResult{Name: "vcenter", Reason: "transient: refused: connexion refusée " + strings.Repeat("x", 200)}},
	}}
	from, _ := mail.ParseAddress("linkgate@example.com")
	to, _ := mail.ParseAddress("ops@example.com")
	raw := emailMessage(st, "hôte-01", from, []*mail.Address{to}, st.Since, "<id@example.com>")
	for _, c := range raw {
		if c >= 0x80 {
			t.Fatalf("8-bit byte in the message:\n%s", raw)
		}
	}
	m := parseMail(t, receivedMail{data: string(raw)})
	if m.subject != "linkgate not ready on hôte-01 (failing: vcenter)" || m.header.Get("Date") != "Wed, 02 Jan 2030 03:04:05 +0000" {
		t.Errorf("subject %q, date %q", m.subject, m.header.Get("Date"))
	}
	if !strings.Contains(m.body, "[-]vcenter failed: transient: refused: connexion refusée "+strings.Repeat("x", 200)+"\n") ||
		!strings.Contains(m.body, "Level: warning\n") {
		t.Errorf("body:\n%s", m.body)
	}
}
