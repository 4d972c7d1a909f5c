package release

import (
	"errors"
	"net/http"
	"net/url"
	"time"
)

// HeaderTimeout bounds the wait for an answer's headers on every request
// ferry makes to GitHub, a registry or a download server: a server that
// accepts the connection and never answers does not hold a rollout.
const HeaderTimeout = 30 * time.Second

// IdleTimeout is how long a download may go without a byte before it is
// abandoned (and retried), unless DownloadOptions say otherwise.
const IdleTimeout = 30 * time.Second

// ProxyURL parses a proxy setting. Its error never quotes the value, which
// may hold a password.
func ProxyURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("proxy is not an http(s) URL (a password with % in it must write it %25); fix it with `ferry config set proxy URL`")
	}
	return u, nil
}

// NewTransport is an HTTP transport with HeaderTimeout, through proxy when
// one is set, and never through the environment's proxy variables: the
// fleet's proxy setting says.
func NewTransport(proxy string) (*http.Transport, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.ResponseHeaderTimeout = HeaderTimeout
	if proxy != "" {
		u, err := ProxyURL(proxy)
		if err != nil {
			return nil, err
		}
		t.Proxy = http.ProxyURL(u)
	}
	return t, nil
}
