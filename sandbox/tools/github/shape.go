package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/talonhq/talon/sandbox/guest"
)

// Bounds on text returned to the model.
const (
	maxBodyChars    = 4000
	maxCommentChars = 1500
)

// Wire types: the subset of GitHub's JSON the tool reads.
type (
	ghUser struct {
		Login string `json:"login"`
	}
	ghLabel struct {
		Name string `json:"name"`
	}
	ghRef struct {
		Ref string `json:"ref"`
	}
	ghIssue struct {
		Number      int       `json:"number"`
		Title       string    `json:"title"`
		State       string    `json:"state"`
		StateReason string    `json:"state_reason"`
		User        *ghUser   `json:"user"`
		Labels      []ghLabel `json:"labels"`
		Body        string    `json:"body"`
		HTMLURL     string    `json:"html_url"`
		Comments    int       `json:"comments"`
		CreatedAt   string    `json:"created_at"`
		UpdatedAt   string    `json:"updated_at"`
		ClosedAt    string    `json:"closed_at"`
		PullRequest *struct{} `json:"pull_request"`

		// Pull requests only.
		Draft        bool   `json:"draft"`
		Merged       bool   `json:"merged"`
		MergedAt     string `json:"merged_at"`
		Head         *ghRef `json:"head"`
		Base         *ghRef `json:"base"`
		Additions    int    `json:"additions"`
		Deletions    int    `json:"deletions"`
		ChangedFiles int    `json:"changed_files"`
	}
	ghComment struct {
		User      *ghUser `json:"user"`
		Body      string  `json:"body"`
		HTMLURL   string  `json:"html_url"`
		CreatedAt string  `json:"created_at"`
	}
	ghSearch struct {
		TotalCount        int       `json:"total_count"`
		IncompleteResults bool      `json:"incomplete_results"`
		Items             []ghIssue `json:"items"`
	}
)

// Issue is the compact summary of an issue or pull request.
type Issue struct {
	Number    int      `json:"number"`
	Title     string   `json:"title"`
	State     string   `json:"state"`
	Author    string   `json:"author,omitempty"`
	Labels    []string `json:"labels,omitempty"`
	URL       string   `json:"url"`
	Comments  int      `json:"comments"`
	IsPull    bool     `json:"is_pull,omitempty"`
	CreatedAt string   `json:"created_at,omitempty"`
	UpdatedAt string   `json:"updated_at,omitempty"`
	ClosedAt  string   `json:"closed_at,omitempty"`
	Body      string   `json:"body,omitempty"`
	// BodyTruncated is set when Body was cut.
	BodyTruncated bool `json:"body_truncated,omitempty"`
}

// Pull is the compact summary of a pull request.
type Pull struct {
	Issue
	Draft        bool   `json:"draft,omitempty"`
	Merged       bool   `json:"merged"`
	MergedAt     string `json:"merged_at,omitempty"`
	Head         string `json:"head,omitempty"`
	Base         string `json:"base,omitempty"`
	Additions    int    `json:"additions"`
	Deletions    int    `json:"deletions"`
	ChangedFiles int    `json:"changed_files"`
}

// Search is the compact result of an issue search; items carry no body.
type Search struct {
	TotalCount int     `json:"total_count"`
	Incomplete bool    `json:"incomplete,omitempty"`
	Items      []Issue `json:"items"`
}

// Comment is one issue or pull request comment.
type Comment struct {
	Author        string `json:"author,omitempty"`
	CreatedAt     string `json:"created_at,omitempty"`
	URL           string `json:"url"`
	Body          string `json:"body"`
	BodyTruncated bool   `json:"body_truncated,omitempty"`
}

func summarise(in ghIssue, withBody bool) Issue {
	out := Issue{
		Number:    in.Number,
		Title:     in.Title,
		State:     in.State,
		URL:       in.HTMLURL,
		Comments:  in.Comments,
		IsPull:    in.PullRequest != nil,
		CreatedAt: in.CreatedAt,
		UpdatedAt: in.UpdatedAt,
		ClosedAt:  in.ClosedAt,
	}
	if in.StateReason != "" && in.State == "closed" {
		out.State = "closed (" + in.StateReason + ")"
	}
	if in.User != nil {
		out.Author = in.User.Login
	}
	for _, l := range in.Labels {
		out.Labels = append(out.Labels, l.Name)
	}
	if withBody {
		out.Body, out.BodyTruncated = guest.Truncate(strings.TrimSpace(in.Body), maxBodyChars)
	}
	return out
}

func shapeIssue(b []byte) (Issue, error) {
	var in ghIssue
	if err := json.Unmarshal(b, &in); err != nil {
		return Issue{}, fmt.Errorf("github: decode issue: %w", err)
	}
	return summarise(in, true), nil
}

func shapePull(b []byte) (Pull, error) {
	var in ghIssue
	if err := json.Unmarshal(b, &in); err != nil {
		return Pull{}, fmt.Errorf("github: decode pull request: %w", err)
	}
	out := Pull{
		Issue:        summarise(in, true),
		Draft:        in.Draft,
		Merged:       in.Merged,
		MergedAt:     in.MergedAt,
		Additions:    in.Additions,
		Deletions:    in.Deletions,
		ChangedFiles: in.ChangedFiles,
	}
	out.IsPull = true
	if in.Head != nil {
		out.Head = in.Head.Ref
	}
	if in.Base != nil {
		out.Base = in.Base.Ref
	}
	return out, nil
}

func shapeSearch(b []byte) (Search, error) {
	var in ghSearch
	if err := json.Unmarshal(b, &in); err != nil {
		return Search{}, fmt.Errorf("github: decode search: %w", err)
	}
	out := Search{TotalCount: in.TotalCount, Incomplete: in.IncompleteResults, Items: []Issue{}}
	for _, it := range in.Items {
		out.Items = append(out.Items, summarise(it, false))
	}
	return out, nil
}

func shapeComments(b []byte) ([]Comment, error) {
	var in []ghComment
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, fmt.Errorf("github: decode comments: %w", err)
	}
	out := []Comment{}
	for _, c := range in {
		oc := Comment{CreatedAt: c.CreatedAt, URL: c.HTMLURL}
		if c.User != nil {
			oc.Author = c.User.Login
		}
		oc.Body, oc.BodyTruncated = guest.Truncate(strings.TrimSpace(c.Body), maxCommentChars)
		out = append(out, oc)
	}
	return out, nil
}

// apiError turns a non-2xx response into a short message for the model,
// using GitHub's {"message": ...} when present.
func apiError(status int, body []byte, authenticated bool) error {
	var e struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(body, &e) // best effort: the status alone is enough
	// net/http is not imported for StatusText: it would double the module.
	msg := fmt.Sprintf("github: HTTP %d", status)
	if e.Message != "" {
		m, _ := guest.Truncate(e.Message, 300)
		msg += ": " + m
	}
	if !authenticated && (status == 403 || status == 404 || status == 429) {
		msg += " (the request was anonymous: the user can store a GitHub token named \"github\" in the vault)"
	}
	return errors.New(msg)
}
