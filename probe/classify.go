package probe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/xml"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/vim25/types"
	vimxml "github.com/vmware/govmomi/vim25/xml"
)

// Class says whether retrying soon can help.
type Class string

// Classes. The zero Class means no error.
const (
	// Transient errors are retried on the backoff schedule.
	Transient Class = "transient"
	// Permanent errors need someone to change something (password, CA,
	// URL); they are re-checked only at the slow cadence or when a watched
	// file changes.
	Permanent Class = "permanent"
)

// Kind names the cause of an error. It is a metric label value, so the set
// is small and fixed.
type Kind string

// Transient kinds.
const (
	KindTimeout         Kind = "timeout"
	KindRefused         Kind = "refused"
	KindReset           Kind = "reset"
	KindDNS             Kind = "dns"
	KindNetUnreachable  Kind = "net_unreachable"
	KindHostUnreachable Kind = "host_unreachable"
	KindTLSHandshake    Kind = "tls_handshake"
	KindSessionExpired  Kind = "session_expired"
	KindServerBusy      Kind = "server_busy"
	KindNetworkDown     Kind = "network_down"
	// KindServerFault is a SOAP fault this package has no better name for:
	// the server answered, so the path works, but the call failed.
	KindServerFault Kind = "server_fault"
	KindCanceled    Kind = "canceled"
	// KindLoginLimited is a login held back by the failed-login limit
	// (Config.MaxFailedLogins): it clears with time.
	KindLoginLimited Kind = "login_limited"
	KindUnknown      Kind = "unknown"
)

// Permanent kinds.
const (
	KindAuth           Kind = "auth"
	KindPermission     Kind = "permission"
	KindTLSCertificate Kind = "tls_certificate"
	KindProtocol       Kind = "protocol"
	KindConfig         Kind = "config"
)

// OpError is a failed step of talking to one vCenter: the operation, the
// target (host[:port], never user info) and the cause.
type OpError struct {
	Op     string // "connect", "login", "probe", "read password", ...
	Target string
	Err    error
}

func (e *OpError) Error() string { return e.Op + " " + e.Target + ": " + e.Err.Error() }
func (e *OpError) Unwrap() error { return e.Err }

// ConfigError is a configuration problem; Field names the offending Config
// field.
type ConfigError struct {
	Field string
	Err   error
}

func (e *ConfigError) Error() string { return "config " + e.Field + ": " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// HTTPStatusError is an HTTP answer that is neither a SOAP result (200)
// nor a SOAP fault (500): a proxy, a load balancer, or not a vSphere
// endpoint at all.
type HTTPStatusError struct {
	StatusCode int
	Status     string
}

func (e *HTTPStatusError) Error() string { return "unexpected HTTP status " + e.Status }

// HandshakeError is a failed TLS handshake. It marks errors such as EOF as
// happening during the handshake, where they mean something else than
// during a request.
type HandshakeError struct {
	Addr string
	Err  error
}

func (e *HandshakeError) Error() string { return "tls handshake with " + e.Addr + ": " + e.Err.Error() }
func (e *HandshakeError) Unwrap() error { return e.Err }

// ThumbprintMismatchError is a server certificate that matches none of the
// pinned thumbprints.
type ThumbprintMismatchError struct {
	// SHA256 is the server certificate's SHA-256 thumbprint, to compare
	// with what was configured.
	SHA256 string
}

func (e *ThumbprintMismatchError) Error() string {
	return "server certificate thumbprint " + e.SHA256 + " matches no pinned thumbprint"
}

// NotVSphereError is a server that speaks HTTPS and answers at the SDK
// path but does not describe itself as a vSphere API endpoint.
type NotVSphereError struct{ Detail string }

func (e *NotVSphereError) Error() string { return "not a vSphere API endpoint: " + e.Detail }

// Classify names the class and kind of an error from talking to vCenter.
// Typed checks come first (errors.As / errors.Is over the whole chain,
// govmomi's fault.Is for SOAP faults); matching on the message is only the
// last resort for errors whose type was lost on the way (see
// classifyMessage). An error nothing recognises is transient/unknown:
// retrying something unknown is cheaper than giving up on it.
func Classify(err error) (Class, Kind) {
	if err == nil {
		return "", ""
	}

	// Our own types first: they are precise by construction.
	var ce *ConfigError
	if errors.As(err, &ce) {
		return Permanent, KindConfig
	}
	var tm *ThumbprintMismatchError
	if errors.As(err, &tm) {
		return Permanent, KindTLSCertificate
	}
	var nv *NotVSphereError
	if errors.As(err, &nv) {
		return Permanent, KindProtocol
	}
	var ll *LoginLimitError
	if errors.As(err, &ll) {
		return Transient, KindLoginLimited
	}

	// A SOAP fault means the server answered: the network is fine.
	// NotAuthenticated embeds NoPermission, so it is checked first.
	switch {
	case fault.Is(err, &types.NotAuthenticated{}):
		return Transient, KindSessionExpired
	case fault.Is(err, &types.InvalidLogin{}):
		return Permanent, KindAuth
	case fault.Is(err, &types.NoPermission{}),
		fault.Is(err, &types.NoPermissionOnAD{}),
		fault.Is(err, &types.DvsNotAuthorized{}):
		return Permanent, KindPermission
	}

	// Certificates: wrapped by tls.CertificateVerificationError since Go 1.20.
	if errors.As(err, new(x509.UnknownAuthorityError)) ||
		errors.As(err, new(x509.HostnameError)) ||
		errors.As(err, new(x509.CertificateInvalidError)) ||
		errors.As(err, new(x509.SystemRootsError)) ||
		errors.As(err, new(*tls.CertificateVerificationError)) {
		return Permanent, KindTLSCertificate
	}
	// The peer's first bytes were not a TLS record: a plain-HTTP port or
	// some other service.
	if errors.As(err, new(tls.RecordHeaderError)) {
		return Permanent, KindProtocol
	}

	var se *HTTPStatusError
	if errors.As(err, &se) {
		switch {
		case se.StatusCode == http.StatusTooManyRequests || se.StatusCode >= 500:
			return Transient, KindServerBusy
		case se.StatusCode == http.StatusUnauthorized:
			return Permanent, KindAuth
		case se.StatusCode == http.StatusForbidden:
			return Permanent, KindPermission
		}
		return Permanent, KindProtocol
	}
	// Not SOAP: something answered at the SDK path, but not vSphere.
	// govmomi decodes with its own fork of encoding/xml.
	if errors.As(err, new(*vimxml.SyntaxError)) || errors.As(err, new(vimxml.UnmarshalError)) ||
		errors.As(err, new(*xml.SyntaxError)) || errors.As(err, new(xml.UnmarshalError)) {
		return Permanent, KindProtocol
	}

	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return Transient, KindDNS
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return Transient, KindRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.EPIPE):
		return Transient, KindReset
	case errors.Is(err, syscall.ENETUNREACH):
		return Transient, KindNetUnreachable
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.EHOSTDOWN):
		return Transient, KindHostUnreachable
	case errors.Is(err, syscall.ENETDOWN):
		return Transient, KindNetworkDown
	case errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, context.DeadlineExceeded):
		return Transient, KindTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return Transient, KindTimeout
	}
	if errors.Is(err, context.Canceled) {
		return Transient, KindCanceled
	}

	// Anything else that broke the handshake (an alert, the peer closing
	// mid-handshake) may well work on the next try.
	var he *HandshakeError
	if errors.As(err, &he) || errors.As(err, new(tls.AlertError)) {
		return Transient, KindTLSHandshake
	}
	// The server closed the connection without an answer.
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return Transient, KindReset
	}
	// Any other SOAP fault.
	var hf interface{ Fault() types.BaseMethodFault }
	if errors.As(err, &hf) {
		return Transient, KindServerFault
	}

	if c, k, ok := classifyMessage(err.Error()); ok {
		return c, k
	}
	return Transient, KindUnknown
}

// classifyMessage is the documented last resort: some layers flatten errors
// with fmt.Errorf("%v") or errors.New(err.Error()) (govmomi's thumbprint
// check, for one), losing the type. The substrings are the stable texts of
// the Go standard library and govmomi for the same conditions the typed
// checks above cover.
func classifyMessage(msg string) (Class, Kind, bool) {
	m := strings.ToLower(msg)
	for _, r := range []struct {
		sub   string
		class Class
		kind  Kind
	}{
		{"thumbprint does not match", Permanent, KindTLSCertificate},
		{"x509: ", Permanent, KindTLSCertificate},
		{"certificate signed by unknown authority", Permanent, KindTLSCertificate},
		{"first record does not look like a tls handshake", Permanent, KindProtocol},
		{"server gave http response to https client", Permanent, KindProtocol},
		{"incorrect user name or password", Permanent, KindAuth},
		{"invalidlogin", Permanent, KindAuth},
		{"notauthenticated", Transient, KindSessionExpired},
		{"no such host", Transient, KindDNS},
		{"server misbehaving", Transient, KindDNS},
		{"connection refused", Transient, KindRefused},
		{"connection reset", Transient, KindReset},
		{"broken pipe", Transient, KindReset},
		{"network is unreachable", Transient, KindNetUnreachable},
		{"no route to host", Transient, KindHostUnreachable},
		{"network is down", Transient, KindNetworkDown},
		{"i/o timeout", Transient, KindTimeout},
		{"deadline exceeded", Transient, KindTimeout},
		{"tls: ", Transient, KindTLSHandshake},
	} {
		if strings.Contains(m, r.sub) {
			return r.class, r.kind, true
		}
	}
	return "", "", false
}

// failure is an attempt's error as Status and the metrics show it; the
// zero failure is a success.
type failure struct {
	class  Class
	kind   Kind
	reason string // the error text: errors are built without secrets
}

// classifyFailure classifies err; nil is the zero failure.
func classifyFailure(err error) failure {
	if err == nil {
		return failure{}
	}
	class, kind := Classify(err)
	return failure{class: class, kind: kind, reason: err.Error()}
}

// ok says the attempt succeeded: Classify gives every error a class.
func (f failure) ok() bool { return f.class == "" }

// opError wraps err with its operation and target; nil stays nil.
func opError(op, target string, err error) error {
	if err == nil {
		return nil
	}
	return &OpError{Op: op, Target: target, Err: err}
}
