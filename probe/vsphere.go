package probe

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/linkgate/linkgate/internal/boundedfile"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/session/keepalive"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
)

// keepAliveIdle is how long a session may sit without a call before the
// keepalive touches it. Probes normally touch it every Interval; this
// covers a long Interval against vCenter's 30-minute idle timeout.
const keepAliveIdle = 5 * time.Minute

// About is what a vCenter says about itself (ServiceContent.about).
type About struct {
	Name         string
	FullName     string
	Version      string
	Build        string
	APIType      string
	APIVersion   string
	InstanceUUID string
}

// DialFunc dials a TCP connection, like net.Dialer.DialContext.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// conn is one logged-in session with one vCenter.
type conn struct {
	soap  *soap.Client
	vim   *vim25.Client
	mgr   *session.Manager
	keep  *keepalive.HandlerSOAP
	about About
}

// tlsSettings is how a target trusts its server.
type tlsSettings struct {
	insecure bool
	caFile   string
	pins     [][]byte
}

// newSOAPClient builds a client whose every TCP connection goes through
// dial and whose TLS handshake this package does itself: govmomi's own TLS
// dialer uses tls.Dial, which ignores both the dialer and the context.
func newSOAPClient(u *url.URL, host string, ts tlsSettings, dial DialFunc) (*soap.Client, error) {
	conf := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	switch {
	case ts.insecure:
		conf.InsecureSkipVerify = true
	case ts.caFile != "":
		pool, err := boundedfile.CertPool(ts.caFile)
		if err != nil {
			return nil, &ConfigError{Field: "CAFile", Err: err}
		}
		conf.RootCAs = pool
	case len(ts.pins) > 0:
		// The pin is the identity; no chain to check.
		conf.InsecureSkipVerify = true
	}
	if len(ts.pins) > 0 {
		pins := ts.pins
		conf.VerifyConnection = func(cs tls.ConnectionState) error {
			return checkPin(cs.PeerCertificates, pins)
		}
	}

	sc := soap.NewClient(u, ts.insecure)
	tr := sc.DefaultTransport()
	// A proxy would put someone else's network path under the probe.
	tr.Proxy = nil
	tr.DialContext = dial
	tr.TLSClientConfig = conf
	tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		raw, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		c := tls.Client(raw, conf.Clone())
		if err := c.HandshakeContext(ctx); err != nil {
			_ = raw.Close()
			return nil, &HandshakeError{Addr: addr, Err: err}
		}
		return c, nil
	}
	sc.Client.Transport = statusTransport{tr}
	return sc, nil
}

func checkPin(certs []*x509.Certificate, pins [][]byte) error {
	if len(certs) == 0 {
		return &ThumbprintMismatchError{SHA256: "none"}
	}
	s1 := sha1.Sum(certs[0].Raw)
	s256 := sha256.Sum256(certs[0].Raw)
	for _, p := range pins {
		if bytes.Equal(p, s1[:]) || bytes.Equal(p, s256[:]) {
			return nil
		}
	}
	return &ThumbprintMismatchError{SHA256: colonHex(s256[:])}
}

func colonHex(b []byte) string {
	h := strings.ToUpper(hex.EncodeToString(b))
	var sb strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			sb.WriteByte(':')
		}
		sb.WriteString(h[i : i+2])
	}
	return sb.String()
}

// statusTransport turns HTTP answers that are neither a SOAP result (200)
// nor a SOAP fault (500) into a typed *HTTPStatusError; govmomi reports
// them with an unexported type that only its text describes.
type statusTransport struct{ next *http.Transport }

func (t statusTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if res.StatusCode == http.StatusOK || res.StatusCode == http.StatusInternalServerError {
		return res, nil
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	_ = res.Body.Close()
	return nil, &HTTPStatusError{StatusCode: res.StatusCode, Status: res.Status}
}

// connectOptions are the per-attempt inputs of connect.
type connectOptions struct {
	target   string
	url      *url.URL // never with user info
	host     string
	user     string
	password secret
	tls      tlsSettings
	dial     DialFunc
	timeout  time.Duration

	// beforeLogin may refuse to send the Login (the failed-login limit);
	// afterLogin gets the answer of every Login that was sent.
	beforeLogin func() error
	afterLogin  func(error)
}

// connect reaches the SDK endpoint, reads ServiceContent (About) and logs
// in. The password goes only into the Login request's body; no error can
// contain it, since none is built from it.
func connect(ctx context.Context, o connectOptions) (*conn, error) {
	sc, err := newSOAPClient(o.url, o.host, o.tls, o.dial)
	if err != nil {
		return nil, opError("connect", o.target, err)
	}
	cctx, cancel := context.WithTimeout(ctx, o.timeout)
	vc, err := vim25.NewClient(cctx, sc)
	cancel()
	if err != nil {
		sc.CloseIdleConnections()
		return nil, opError("connect", o.target, err)
	}
	a := vc.ServiceContent.About
	if a.ApiType == "" || a.ApiVersion == "" {
		sc.CloseIdleConnections()
		return nil, opError("connect", o.target, &NotVSphereError{Detail: "ServiceContent has no API type or version"})
	}

	timeout := o.timeout
	keep := keepalive.NewHandlerSOAP(sc, keepAliveIdle, func() error {
		kctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		_, err := methods.GetCurrentTime(kctx, sc)
		return err
	})
	vc.RoundTripper = keep
	mgr := session.NewManager(vc)

	if o.beforeLogin != nil {
		if err := o.beforeLogin(); err != nil {
			keep.Stop()
			sc.CloseIdleConnections()
			return nil, opError("login", o.target, err)
		}
	}
	lctx, cancel := context.WithTimeout(ctx, o.timeout)
	err = mgr.Login(lctx, url.UserPassword(o.user, o.password.value()))
	cancel()
	if o.afterLogin != nil {
		o.afterLogin(err)
	}
	if err != nil {
		keep.Stop()
		sc.CloseIdleConnections()
		return nil, opError("login", o.target, err)
	}
	return &conn{
		soap: sc, vim: vc, mgr: mgr, keep: keep,
		about: About{
			Name: a.Name, FullName: a.FullName, Version: a.Version, Build: a.Build,
			APIType: a.ApiType, APIVersion: a.ApiVersion, InstanceUUID: a.InstanceUuid,
		},
	}, nil
}

// probe is the one cheap authenticated call.
func (c *conn) probe(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err := methods.GetCurrentTime(ctx, c.vim)
	return err
}

// close ends the session. logout false skips the Logout call, for a
// session the server already dropped or a network known to be down.
func (c *conn) close(logout bool, timeout time.Duration) {
	if logout {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		_ = c.mgr.Logout(ctx) // also stops the keepalive
		cancel()
	}
	c.keep.Stop()
	c.soap.CloseIdleConnections()
}
