package slack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/talonhq/talon/agent"
)

// slackFile is the part of a file object in a message event that Talon
// uses. The size is the one Slack gives: the runtime checks its limits
// against it before it downloads anything.
type slackFile struct {
	ID                 string `json:"id"`
	Name               string `json:"name"`
	Title              string `json:"title"`
	Mimetype           string `json:"mimetype"`
	Size               int64  `json:"size"`
	Mode               string `json:"mode"`
	URLPrivate         string `json:"url_private"`
	URLPrivateDownload string `json:"url_private_download"`
}

// eventFiles reads the files of a message event; a file object that does
// not decode, or was deleted (a tombstone), is left out. A file stored
// outside Slack (mode external) has no Source, and the runtime names it as
// not downloadable.
func eventFiles(raw []json.RawMessage) []agent.File {
	var out []agent.File
	for _, r := range raw {
		var f slackFile
		if json.Unmarshal(r, &f) != nil || f.ID == "" || f.Mode == "tombstone" {
			continue
		}
		name := f.Name
		if name == "" {
			name = f.Title
		}
		src := f.URLPrivateDownload
		if src == "" {
			src = f.URLPrivate
		}
		if f.Mode == "external" {
			src = ""
		}
		out = append(out, agent.File{ID: f.ID, Name: name, MediaType: f.Mimetype, Size: f.Size, Source: src})
	}
	return out
}

var _ agent.FileFetcher = (*Adapter)(nil)

// errFilesScope is Slack answering a download with its sign-in page: the
// bot token cannot read files.
var errFilesScope = errors.New("slack: the file download returned a web page: the app needs the files:read scope (add it, see the manifest, and reinstall the app)")

// FetchFile downloads a file of a message event from its url_private with
// the bot token. The token is sent only to Slack's own hosts (or the host
// of Config.APIURL, for GovSlack and tests), over https; a redirect to
// another host does not carry it (net/http drops it).
func (a *Adapter) FetchFile(ctx context.Context, f agent.File) (io.ReadCloser, error) {
	if err := a.setup(); err != nil {
		return nil, err
	}
	if f.Source == "" {
		return nil, fmt.Errorf("slack: file %s is stored outside Slack", f.ID)
	}
	if !a.validResponseURL(f.Source) {
		return nil, fmt.Errorf("slack: file %s: its URL is not on a Slack host; not sending the token there", f.ID)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.Source, nil)
	if err != nil {
		return nil, fmt.Errorf("slack: file %s: %w", f.ID, err)
	}
	req.Header.Set("Authorization", "Bearer "+a.cfg.BotToken)
	// The download's time is bounded by ctx (files.timeout), not by the
	// Web API client's timeout, which is for short calls.
	client := &http.Client{Transport: a.hc.Transport, CheckRedirect: a.hc.CheckRedirect}
	res, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("slack: download file %s: %w", f.ID, redactURL(err))
	}
	if res.StatusCode != http.StatusOK {
		res.Body.Close()
		return nil, fmt.Errorf("slack: download file %s: HTTP %d", f.ID, res.StatusCode)
	}
	if mt, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type")); mt == "text/html" && !strings.Contains(f.MediaType, "html") {
		res.Body.Close()
		return nil, errFilesScope
	}
	return res.Body, nil
}

// redactURL is the cause of a *url.Error without its URL (a file's
// address is not logged).
func redactURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}
