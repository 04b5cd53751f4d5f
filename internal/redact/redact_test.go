package redact

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://vc.example/sdk":                     "https://vc.example/sdk",
		"https://user:s3cret@vc.example:443/sdk?x=1": "https://vc.example:443/sdk",
		"https://vc.example/sdk?token=s3cret#s3cret": "https://vc.example/sdk",
		"user:s3cret@vc.example:443":                 "vc.example:443",
		"user:s3cret@host:9977/ready":                "host:9977/ready",
		"https://vc.example/a@b":                     "https://vc.example/a@b",
		"https://a@b@vc.example/sdk":                 "https://vc.example/sdk",
		"http://[::1]:9977/ready?wait=30s":           "http://[::1]:9977/ready",
	} {
		if got := URL(in); got != want {
			t.Errorf("URL(%q) = %q, want %q", in, got, want)
		}
		if strings.Contains(URL(in), "s3cret") {
			t.Errorf("URL(%q) shows the secret", in)
		}
	}
}

func TestOrigin(t *testing.T) {
	for in, want := range map[string]string{
		"https://hooks.slack.com/services/T0/B0/s3cret": "https://hooks.slack.com",
		"https://u:s3cret@hooks.example:8443/x":         "https://hooks.example:8443",
		"hooks.example/s3cret":                          "<URL without a host>",
		"%zz":                                           "<URL without a host>",
	} {
		if got := Origin(in); got != want {
			t.Errorf("Origin(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestTarget(t *testing.T) {
	for in, want := range map[string]string{
		"vc.example:443":             "vc.example:443",
		"https://u:s3cret@vc/sdk":    "https://vc/sdk",
		"u:s3cret@vc.example":        "vc.example",
		"https://vc.example/sdk?a=b": "https://vc.example/sdk",
	} {
		if got := Target(in); got != want {
			t.Errorf("Target(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestError(t *testing.T) {
	_, err := http.Get("http://user:s3cret@127.0.0.1:0/hook/s3cret")
	if err == nil {
		t.Fatal("want an error from port 0")
	}
	if got := Error(err).Error(); strings.Contains(got, "s3cret") {
		t.Errorf("Error kept the URL: %s", got)
	}
	plain := errors.New("plain")
	if Error(plain) != plain {
		t.Error("Error changed an error without a URL")
	}
}
