package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const issueJSON = `{
  "url": "https://api.github.com/repos/octo/hello/issues/7",
  "html_url": "https://github.com/octo/hello/issues/7",
  "number": 7,
  "title": "Crash on start",
  "state": "closed",
  "state_reason": "completed",
  "user": {"login": "alice", "id": 1, "avatar_url": "https://x"},
  "labels": [{"id": 1, "name": "bug", "color": "f00"}, {"name": "p1"}],
  "body": "  Steps:\r\n1. run\n  ",
  "comments": 3,
  "created_at": "2024-01-02T03:04:05Z",
  "updated_at": "2024-01-03T03:04:05Z",
  "closed_at": "2024-01-04T03:04:05Z",
  "reactions": {"+1": 2}
}`

const pullJSON = `{
  "html_url": "https://github.com/octo/hello/pull/9",
  "number": 9, "title": "Fix crash", "state": "open", "draft": true,
  "user": {"login": "bob"}, "labels": [], "body": null, "comments": 0,
  "merged": false, "merged_at": null,
  "head": {"ref": "fix-crash", "sha": "abc"}, "base": {"ref": "main"},
  "additions": 10, "deletions": 2, "changed_files": 1
}`

const searchJSON = `{
  "total_count": 2, "incomplete_results": false,
  "items": [
    {"number": 7, "title": "Crash on start", "state": "open", "user": {"login": "alice"},
     "labels": [{"name": "bug"}], "html_url": "https://github.com/octo/hello/issues/7",
     "comments": 3, "body": "long body not returned in search"},
    {"number": 9, "title": "Fix crash", "state": "open", "user": null,
     "html_url": "https://github.com/octo/hello/pull/9", "pull_request": {"url": "x"}}
  ]
}`

func TestShapeIssue(t *testing.T) {
	got, err := shapeIssue([]byte(issueJSON))
	if err != nil {
		t.Fatal(err)
	}
	want := Issue{
		Number: 7, Title: "Crash on start", State: "closed (completed)", Author: "alice",
		Labels: []string{"bug", "p1"}, URL: "https://github.com/octo/hello/issues/7", Comments: 3,
		CreatedAt: "2024-01-02T03:04:05Z", UpdatedAt: "2024-01-03T03:04:05Z", ClosedAt: "2024-01-04T03:04:05Z",
		Body: "Steps:\r\n1. run",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("issue mismatch (-want +got):\n%s", diff)
	}
}

func TestShapeIssueLongBody(t *testing.T) {
	b, _ := json.Marshal(map[string]any{"number": 1, "body": strings.Repeat("ü", maxBodyChars+1)})
	got, err := shapeIssue(b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.BodyTruncated || got.Body != strings.Repeat("ü", maxBodyChars) {
		t.Errorf("body truncated = %v, %d runes; want true, %d", got.BodyTruncated, len([]rune(got.Body)), maxBodyChars)
	}
}

func TestShapePull(t *testing.T) {
	got, err := shapePull([]byte(pullJSON))
	if err != nil {
		t.Fatal(err)
	}
	want := Pull{
		Issue: Issue{Number: 9, Title: "Fix crash", State: "open", Author: "bob", URL: "https://github.com/octo/hello/pull/9", IsPull: true},
		Draft: true, Head: "fix-crash", Base: "main", Additions: 10, Deletions: 2, ChangedFiles: 1,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("pull mismatch (-want +got):\n%s", diff)
	}
}

func TestShapeSearch(t *testing.T) {
	got, err := shapeSearch([]byte(searchJSON))
	if err != nil {
		t.Fatal(err)
	}
	want := Search{TotalCount: 2, Items: []Issue{
		{Number: 7, Title: "Crash on start", State: "open", Author: "alice", Labels: []string{"bug"}, URL: "https://github.com/octo/hello/issues/7", Comments: 3},
		{Number: 9, Title: "Fix crash", State: "open", URL: "https://github.com/octo/hello/pull/9", IsPull: true},
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("search mismatch (-want +got):\n%s", diff)
	}
	empty, err := shapeSearch([]byte(`{"total_count":0,"items":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(empty); string(b) != `{"total_count":0,"items":[]}` {
		t.Errorf("empty search = %s, want items: []", b)
	}
}

func TestShapeComments(t *testing.T) {
	got, err := shapeComments([]byte(`[
	  {"user": {"login": "carol"}, "body": " LGTM ", "html_url": "https://github.com/octo/hello/issues/7#c1", "created_at": "2024-01-05T00:00:00Z"},
	  {"user": null, "body": "` + strings.Repeat("x", maxCommentChars+1) + `", "html_url": "u"}
	]`))
	if err != nil {
		t.Fatal(err)
	}
	want := []Comment{
		{Author: "carol", CreatedAt: "2024-01-05T00:00:00Z", URL: "https://github.com/octo/hello/issues/7#c1", Body: "LGTM"},
		{URL: "u", Body: strings.Repeat("x", maxCommentChars), BodyTruncated: true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("comments mismatch (-want +got):\n%s", diff)
	}
}

func TestShapeRejectsBadJSON(t *testing.T) {
	if _, err := shapeIssue([]byte(`[`)); err == nil {
		t.Error("shapeIssue([) succeeded")
	}
	if _, err := shapeComments([]byte(`{}`)); err == nil {
		t.Error("shapeComments({}) succeeded")
	}
}

func TestEndpoint(t *testing.T) {
	tests := []struct {
		name    string
		args    args
		want    string
		wantErr string
	}{
		{"search with repo", args{Action: "search_issues", Query: "crash is:open", Repo: "octo/hello"}, "/search/issues?per_page=10&q=crash+is%3Aopen+repo%3Aocto%2Fhello", ""},
		{"search per_page capped", args{Action: "search_issues", Query: "x", PerPage: 500}, "/search/issues?per_page=30&q=x", ""},
		{"issue", args{Action: "get_issue", Repo: "octo/hello.go", Number: 7}, "/repos/octo/hello.go/issues/7", ""},
		{"pull", args{Action: "get_pull", Repo: "octo/hello", Number: 9}, "/repos/octo/hello/pulls/9", ""},
		{"comments", args{Action: "list_comments", Repo: "octo/hello", Number: 7, PerPage: 5}, "/repos/octo/hello/issues/7/comments?per_page=5", ""},
		{"empty search", args{Action: "search_issues"}, "", "needs a query"},
		{"path traversal", args{Action: "get_issue", Repo: "../../user", Number: 1}, "", "owner/name"},
		{"dot repo", args{Action: "get_issue", Repo: "octo/..", Number: 1}, "", "owner/name"},
		{"extra slash", args{Action: "get_issue", Repo: "octo/hello/x", Number: 1}, "", "owner/name"},
		{"query in repo", args{Action: "get_issue", Repo: "octo/hello?x=1", Number: 1}, "", "owner/name"},
		{"no number", args{Action: "get_pull", Repo: "octo/hello"}, "", "positive number"},
		{"unknown action", args{Action: "delete_repo", Repo: "octo/hello"}, "", "unknown action"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := endpoint(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("endpoint error = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("endpoint: %v", err)
			}
			if got != tt.want {
				t.Errorf("endpoint = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestAPIError(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		auth   bool
		want   string
	}{
		{"message", 422, `{"message":"Validation Failed"}`, true, "github: HTTP 422: Validation Failed"},
		{"anonymous not found hints at token", 404, `{"message":"Not Found"}`, false, `github: HTTP 404: Not Found (the request was anonymous: the user can store a GitHub token named "github" in the vault)`},
		{"no json", 502, `<html>bad gateway</html>`, true, "github: HTTP 502"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := apiError(tt.status, []byte(tt.body), tt.auth).Error(); got != tt.want {
				t.Errorf("apiError = %q, want %q", got, tt.want)
			}
		})
	}
}
