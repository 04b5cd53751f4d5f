package probe

import (
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/linkgate/linkgate/internal/testkit"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
)

// Secrets never enter an error: errors are built from the operation, the
// target and the cause, and the password goes only into the Login body.
// So nothing is substituted, and an error reads the same whatever the
// password is.

// TestErrorTextIsVerbatim: passwords that are also pieces of ordinary
// error text leave that text alone, in statuses and in logs.
func TestErrorTextIsVerbatim(t *testing.T) {
	s := startSim(t, simOptions{})
	dead := testkit.ClosedAddr(t)
	refused := fmt.Sprintf(`connect %[1]s: Post "https://%[1]s/sdk": dial tcp %[1]s: connect: connection refused`, dead)
	rejected := fmt.Sprintf("login %s: ServerFaultCode: Login failure", s.addr)

	for _, pw := range []string{"1", "e", "connect", "refused", "127.0.0.1", "Login", "sdk"} {
		t.Run(pw, func(t *testing.T) {
			cfg := s.config()
			cfg.URLs = []string{dead, s.url()}
			cfg.Password = pw
			var logs logBuffer
			clk := newFakeClock()
			p := newProber(t, cfg, nil, WithLogger(logs.logger()), WithClock(clk))
			once := p.ProbeOnce(context.Background())
			if once[0].Reason != refused || once[1].Reason != rejected {
				t.Errorf("ProbeOnce reasons:\n %q\n %q\nwant\n %q\n %q", once[0].Reason, once[1].Reason, refused, rejected)
			}

			stop := running(t, p)
			waitStatus(t, p, 0, "refused", func(s Status) bool { return s.Kind == KindRefused })
			st := waitStatus(t, p, 1, "auth", func(s Status) bool { return s.Kind == KindAuth })
			stop()
			run, _ := p.Status()
			if run[0].Reason != refused || st.Reason != rejected {
				t.Errorf("Run reasons:\n %q\n %q\nwant\n %q\n %q", run[0].Reason, st.Reason, refused, rejected)
			}
			for _, want := range []string{refused, rejected} {
				// As the text handler quotes it.
				if want = "reason=" + strconv.Quote(want); !strings.Contains(logs.String(), want) {
					t.Errorf("logs lack %q:\n%s", want, logs.String())
				}
			}
			mustContainNone(t, "logs", logs.String(), "REDACTED", "[secret]")
		})
	}
}

// TestLongRandomPasswordNeverShown: a password that cannot occur by chance
// appears in no status, error, log line (debug included), metric, or
// printed value, whether it comes from a file or the literal, is wrong or
// right.
func TestLongRandomPasswordNeverShown(t *testing.T) {
	s := startSim(t, simOptions{})
	dead := testkit.ClosedAddr(t)
	pw := rand.Text() + rand.Text() // 52 random base32 characters

	var outputs []string
	show := func(format string, args ...any) { outputs = append(outputs, fmt.Sprintf(format, args...)) }

	for _, fromFile := range []bool{true, false} {
		s.setPassword(simPass)
		cfg := s.config()
		cfg.URLs = []string{dead, s.url()}
		cfg.Password = pw
		if fromFile {
			cfg.Password = ""
			cfg.PasswordFile = filepath.Join(t.TempDir(), "password")
			writeFile(t, cfg.PasswordFile, pw+"\n")
		}
		var logs logBuffer
		p := newProber(t, cfg, nil, WithLogger(logs.logger()), WithClock(newFakeClock()))

		// Wrong, through Run and ProbeOnce.
		stop := running(t, p)
		waitStatus(t, p, 1, "auth", func(s Status) bool { return s.Kind == KindAuth })
		stop()
		run, _ := p.Status()
		show("%v %+v %#v", run, run, run)
		once := p.ProbeOnce(context.Background())
		show("%+v", once)

		// Right: the success path logs too.
		s.setPassword(pw)
		once = p.ProbeOnce(context.Background())
		if !once[1].Up {
			t.Fatalf("login with the password: %+v", once[1])
		}
		show("%+v", once)

		text, err := testutil.CollectAndFormat(p, expfmt.TypeTextPlain)
		if err != nil {
			t.Fatal(err)
		}
		show("%s", text)
		show("%s", logs.String())
		show("%v %+v %#v", p, p, p)
		show("%v %+v %#v", *p.targets[0], *p.targets[0].creds, p.targets[0].creds.literal)
		show("%v %+v %#v %s", cfg, cfg, cfg, &cfg)

		bad := cfg
		bad.Interval = -1
		show("%v", bad.Validate())
	}
	if len(s.failedLogins()) == 0 || len(s.loginLog()) < 4 {
		t.Fatal("the password never reached vCenter: the test proves nothing")
	}
	for _, out := range outputs {
		mustContainNone(t, "output", out, pw, pw[:16], pw[len(pw)-16:])
	}
}
