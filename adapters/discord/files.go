package discord

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/bwmarrin/discordgo"

	"github.com/talonhq/talon/agent"
)

// attachedFiles reads a message's attachments as files for the runtime,
// with the size Discord states (checked against the limits before any
// download).
func attachedFiles(m *discordgo.Message) []agent.File {
	var out []agent.File
	for _, at := range m.Attachments {
		if at == nil || at.ID == "" {
			continue
		}
		out = append(out, agent.File{ID: at.ID, Name: at.Filename, MediaType: at.ContentType, Size: int64(at.Size), Source: at.URL})
	}
	return out
}

var _ agent.FileFetcher = (*Adapter)(nil)

// cdnHosts are where Discord serves attachments.
var cdnHosts = map[string]bool{"cdn.discordapp.com": true, "media.discordapp.net": true}

// FetchFile downloads an attachment from Discord's CDN. Its URL is
// signed and needs no token, so none is sent; any URL not on the CDN, over
// https, is refused, so that a message cannot make the gateway fetch an
// address of its choosing.
func (a *Adapter) FetchFile(ctx context.Context, f agent.File) (io.ReadCloser, error) {
	u, err := url.Parse(f.Source)
	if err != nil || u.Scheme != "https" || !cdnHosts[strings.ToLower(u.Hostname())] || u.User != nil {
		return nil, fmt.Errorf("discord: attachment %s: its URL is not on Discord's CDN", f.ID)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("discord: attachment %s: %w", f.ID, err)
	}
	res, err := a.fileClient().Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = fmt.Errorf("%s: %w", ue.Op, ue.Err) // no URL: it is not logged
		}
		return nil, fmt.Errorf("discord: download attachment %s: %w", f.ID, err)
	}
	if res.StatusCode != http.StatusOK {
		res.Body.Close()
		return nil, fmt.Errorf("discord: download attachment %s: HTTP %d", f.ID, res.StatusCode)
	}
	return res.Body, nil
}

// fileClient is the REST client's transport without its timeout: the
// download's time is bounded by ctx (files.timeout).
func (a *Adapter) fileClient() *http.Client {
	var t http.RoundTripper
	if a.sess != nil && a.sess.Client != nil {
		t = a.sess.Client.Transport
	} else if a.HTTPClient != nil {
		t = a.HTTPClient.Transport
	}
	return &http.Client{Transport: t}
}
