package probe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testkit"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	vimxml "github.com/vmware/govmomi/vim25/xml"
)

// realErrors produces errors the way they happen, on loopback.
type realErrors struct {
	t   *testing.T
	srv *httptest.Server // TLS server with a self-signed certificate
}

func newRealErrors(t *testing.T) realErrors {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	// Its handshake failures are the point; keep them out of the log.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	t.Cleanup(srv.Close)
	return realErrors{t, srv}
}

func (r realErrors) dialRefused() error {
	_, err := net.Dial("tcp", testkit.ClosedAddr(r.t))
	return err
}

func (r realErrors) readReset() error {
	addr := listen(r.t, func(c net.Conn) {
		c.Read(make([]byte, 1))
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		r.t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("hello"))
	_, err = c.Read(make([]byte, 1))
	return err
}

func (r realErrors) readTimeout() error {
	addr := listen(r.t, func(c net.Conn) { c.Read(make([]byte, 1)); c.Close() })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		r.t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(time.Millisecond))
	_, err = c.Read(make([]byte, 1))
	return err
}

func (r realErrors) contextDeadline() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	req, _ := http.NewRequestWithContext(ctx, "GET", r.srv.URL, nil)
	_, err := r.srv.Client().Do(req)
	return err
}

func (r realErrors) dnsFailure() error {
	dead := testkit.ClosedAddr(r.t)
	res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", dead)
	}}
	_, err := res.LookupHost(context.Background(), "vcenter.invalid")
	return err
}

func (r realErrors) handshake(conf *tls.Config) error {
	c, err := tls.Dial("tcp", r.srv.Listener.Addr().String(), conf)
	if err == nil {
		c.Close()
		r.t.Fatal("handshake succeeded")
	}
	return &HandshakeError{Addr: r.srv.Listener.Addr().String(), Err: err}
}

func (r realErrors) trusted(serverName string) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(r.srv.Certificate())
	return &tls.Config{RootCAs: pool, ServerName: serverName}
}

func (r realErrors) expired() error {
	pool := x509.NewCertPool()
	pool.AddCert(r.srv.Certificate())
	conf := &tls.Config{RootCAs: pool, Time: func() time.Time { return time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC) }}
	return r.handshake(conf)
}

func (r realErrors) notTLS() error {
	addr := listen(r.t, func(c net.Conn) { io.WriteString(c, "HTTP/1.0 400 Bad Request\r\n\r\n"); c.Close() })
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err == nil {
		c.Close()
	}
	return &HandshakeError{Addr: addr, Err: err}
}

func (r realErrors) alert() error {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13}
	srv.StartTLS()
	defer srv.Close()
	c, err := tls.Dial("tcp", srv.Listener.Addr().String(), &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12})
	if err == nil {
		c.Close()
	}
	return &HandshakeError{Addr: srv.Listener.Addr().String(), Err: err}
}

func (r realErrors) handshakeEOF() error {
	addr := listen(r.t, func(c net.Conn) {
		// Read the whole ClientHello record, so that the close is a
		// clean FIN and not a reset for unread data.
		hdr := make([]byte, 5)
		if _, err := io.ReadFull(c, hdr); err == nil {
			io.ReadFull(c, make([]byte, int(hdr[3])<<8|int(hdr[4])))
		}
		c.Close()
	})
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err == nil {
		c.Close()
	}
	return &HandshakeError{Addr: addr, Err: err}
}

func (r realErrors) xmlNotSOAP() error {
	var env soap.Envelope
	return vimxml.NewDecoder(strings.NewReader("<html><body>hi</body></html>")).Decode(&env)
}

func (r realErrors) xmlGarbage() error {
	var env soap.Envelope
	return vimxml.NewDecoder(strings.NewReader("<<<")).Decode(&env)
}

// fault wraps a vSphere fault the way govmomi's SOAP client returns it.
func soapFault(f types.BaseMethodFault) error {
	return soap.WrapSoapFault(&soap.Fault{Code: "ServerFaultCode", String: "fault", Detail: struct {
		//lint:ignore SA5008 typeattr is an option of govmomi's XML decoder, the same tag soap.Fault declares
		Fault types.AnyType `xml:",any,typeattr"`
	}{Fault: f}})
}

// asRequest wraps err as net/http and govmomi do on the way up.
func asRequest(err error) error {
	return &OpError{Op: "probe", Target: "vc:443", Err: &url.Error{Op: "Post", URL: "https://vc:443/sdk", Err: err}}
}

func syscallErr(errno syscall.Errno) error {
	return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errno)}
}

func TestClassify(t *testing.T) {
	r := newRealErrors(t)
	for _, tc := range []struct {
		name  string
		err   error
		class Class
		kind  Kind
	}{
		{"nil", nil, "", ""},

		// Produced for real on loopback.
		{"refused", r.dialRefused(), Transient, KindRefused},
		{"refused via request", asRequest(r.dialRefused()), Transient, KindRefused},
		{"reset", r.readReset(), Transient, KindReset},
		{"read deadline", r.readTimeout(), Transient, KindTimeout},
		{"context deadline", r.contextDeadline(), Transient, KindTimeout},
		{"dns", r.dnsFailure(), Transient, KindDNS},
		{"unknown authority", r.handshake(&tls.Config{RootCAs: x509.NewCertPool()}), Permanent, KindTLSCertificate},
		{"hostname mismatch", r.handshake(r.trusted("vcenter.example")), Permanent, KindTLSCertificate},
		{"expired", r.expired(), Permanent, KindTLSCertificate},
		{"pin mismatch", r.handshake(&tls.Config{InsecureSkipVerify: true, VerifyConnection: func(cs tls.ConnectionState) error {
			return checkPin(cs.PeerCertificates, [][]byte{make([]byte, 32)})
		}}), Permanent, KindTLSCertificate},
		{"not TLS", r.notTLS(), Permanent, KindProtocol},
		{"TLS alert", r.alert(), Transient, KindTLSHandshake},
		{"closed during handshake", r.handshakeEOF(), Transient, KindTLSHandshake},
		{"HTML instead of SOAP", asRequest(r.xmlNotSOAP()), Permanent, KindProtocol},
		{"garbage instead of SOAP", asRequest(r.xmlGarbage()), Permanent, KindProtocol},

		// Constructed as the standard library constructs them.
		{"net unreachable", syscallErr(syscall.ENETUNREACH), Transient, KindNetUnreachable},
		{"host unreachable", syscallErr(syscall.EHOSTUNREACH), Transient, KindHostUnreachable},
		{"network down", syscallErr(syscall.ENETDOWN), Transient, KindNetworkDown},
		{"connect timed out", syscallErr(syscall.ETIMEDOUT), Transient, KindTimeout},
		{"broken pipe", &net.OpError{Op: "write", Err: os.NewSyscallError("write", syscall.EPIPE)}, Transient, KindReset},
		{"dns not found", &net.DNSError{Err: "no such host", Name: "vc", IsNotFound: true}, Transient, KindDNS},
		{"dns timeout is dns", &net.DNSError{Err: "i/o timeout", Name: "vc", IsTimeout: true}, Transient, KindDNS},
		{"EOF from server", asRequest(io.EOF), Transient, KindReset},
		{"canceled", asRequest(context.Canceled), Transient, KindCanceled},

		// vSphere faults, wrapped the way govmomi's SOAP client wraps them.
		{"NotAuthenticated", soapFault(&types.NotAuthenticated{}), Transient, KindSessionExpired},
		{"InvalidLogin", fmt.Errorf("login: %w", soapFault(&types.InvalidLogin{})), Permanent, KindAuth},
		{"NoPermission", soapFault(&types.NoPermission{}), Permanent, KindPermission},
		{"vim fault", soap.WrapVimFault(&types.NoPermission{}), Permanent, KindPermission},
		{"other fault", soapFault(&types.SystemError{}), Transient, KindServerFault},

		// HTTP answers that are not SOAP.
		{"503", asRequest(&HTTPStatusError{503, "503 Service Unavailable"}), Transient, KindServerBusy},
		{"502", asRequest(&HTTPStatusError{502, "502 Bad Gateway"}), Transient, KindServerBusy},
		{"429", asRequest(&HTTPStatusError{429, "429 Too Many Requests"}), Transient, KindServerBusy},
		{"401", asRequest(&HTTPStatusError{401, "401 Unauthorized"}), Permanent, KindAuth},
		{"403", asRequest(&HTTPStatusError{403, "403 Forbidden"}), Permanent, KindPermission},
		{"404", asRequest(&HTTPStatusError{404, "404 Not Found"}), Permanent, KindProtocol},

		// Our own.
		{"config", &OpError{Op: "read password", Target: "vc", Err: &ConfigError{Field: "PasswordFile", Err: os.ErrNotExist}}, Permanent, KindConfig},
		{"not vSphere", &NotVSphereError{Detail: "no API type"}, Permanent, KindProtocol},

		// Last resort: the type was lost on the way.
		{"flattened refused", errors.New("dial tcp 10.0.0.1:443: connect: connection refused"), Transient, KindRefused},
		{"govmomi thumbprint", errors.New(`host "vc:443" thumbprint does not match "AA:BB"`), Permanent, KindTLSCertificate},
		{"flattened x509", errors.New("x509: certificate signed by unknown authority"), Permanent, KindTLSCertificate},
		{"flattened no route", errors.New("connect: no route to host"), Transient, KindHostUnreachable},
		{"unknown", errors.New("something odd"), Transient, KindUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			class, kind := Classify(tc.err)
			if class != tc.class || kind != tc.kind {
				t.Errorf("Classify(%T %v) = %s/%s, want %s/%s", tc.err, tc.err, class, kind, tc.class, tc.kind)
			}
		})
	}
}
