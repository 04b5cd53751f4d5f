package sidecar

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/linkgate/linkgate/internal/redact"
	"github.com/linkgate/linkgate/probe"
)

// VCenterCheck holds when every vCenter target's last probe succeeded and,
// when maxAge > 0, that success is younger than maxAge. The reason is
// "<class>: <reason>" ("permanent: <class>: <reason>" for a permanent
// error), prefixed with the target when there are several.
func VCenterCheck(maxAge time.Duration) Check {
	return NewCheck(CheckVCenter, func(_ context.Context, in *Input) error {
		if len(in.VCenter) == 0 {
			return errors.New("no vCenter probe results yet")
		}
		var problems []string
		permanent := false
		for _, st := range in.VCenter {
			p := vcenterProblem(st, maxAge, in)
			if p == "" {
				continue
			}
			if st.Permanent && !st.Up {
				permanent = true
			}
			if len(in.VCenter) > 1 {
				p = redact.Target(st.Target) + ": " + p
			}
			problems = append(problems, p)
		}
		if len(problems) == 0 {
			return nil
		}
		err := errors.New(strings.Join(problems, "; "))
		if permanent {
			err = permanentError{err}
		}
		return err
	})
}

func vcenterProblem(st probe.Status, maxAge time.Duration, in *Input) string {
	switch {
	case st.Paused:
		return withDetail("probe paused", st.Reason)
	case !st.Up || st.Class != "":
		// The last attempt failed: not ready even while the prober still
		// counts the target up during its fast retries.
		why := st.Reason
		if head := joinDetail(string(st.Class), string(st.Kind)); head != "" {
			why = withDetail(head, st.Reason)
		}
		if why == "" {
			why = "no successful probe yet"
		}
		return why
	case maxAge > 0:
		expires := st.LastSuccess.Add(maxAge)
		if st.LastSuccess.IsZero() || !in.Now.Before(expires) {
			return fmt.Sprintf("stale: no successful probe within %s", maxAge)
		}
		in.RecheckAt(expires)
	}
	return ""
}

// joinDetail renders "class: kind" (either may be empty).
func joinDetail(class, kind string) string {
	switch {
	case class == "":
		return kind
	case kind == "":
		return class
	}
	return class + ": " + kind
}

func withDetail(head, detail string) string {
	if detail == "" {
		return head
	}
	return head + ": " + detail
}

type permanentError struct{ error }

func (permanentError) Is(target error) bool { return target == ErrPermanent }
func (e permanentError) Unwrap() error      { return e.error }
