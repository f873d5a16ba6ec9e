package main

import (
	"fmt"
	"net/url"
	"regexp"
	"strconv"

	"github.com/talonhq/talon/sandbox/guest"
)

const (
	api = "https://api.github.com"
	// credential is the vault entry name the tool asks the host to inject.
	credential = "github"

	defaultPerPage = 10
	maxPerPage     = 30
)

type args struct {
	Action  string `json:"action"`
	Repo    string `json:"repo"`
	Number  int    `json:"number"`
	Query   string `json:"query"`
	PerPage int    `json:"per_page"`
}

// repoPattern is what GitHub allows in owner and repository names.
var repoPattern = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$`)

func init() { guest.Run(run) }

func main() {}

// run performs one action.
func run(a args) (any, error) {
	path, err := endpoint(a)
	if err != nil {
		return nil, err
	}
	body, err := get(path)
	if err != nil {
		return nil, err
	}
	switch a.Action {
	case "search_issues":
		return shapeSearch(body)
	case "get_issue":
		return shapeIssue(body)
	case "get_pull":
		return shapePull(body)
	default: // list_comments; endpoint refused anything else
		return shapeComments(body)
	}
}

// endpoint validates the arguments and returns the API path and query.
func endpoint(a args) (string, error) {
	perPage := a.PerPage
	switch {
	case perPage <= 0:
		perPage = defaultPerPage
	case perPage > maxPerPage:
		perPage = maxPerPage
	}
	needRepo := func() error {
		if !repoPattern.MatchString(a.Repo) || a.Repo[len(a.Repo)-1] == '.' {
			return fmt.Errorf("repo %q must be owner/name", a.Repo)
		}
		if a.Number <= 0 {
			return fmt.Errorf("%s needs a positive number", a.Action)
		}
		return nil
	}
	switch a.Action {
	case "search_issues":
		q := a.Query
		if a.Repo != "" {
			if !repoPattern.MatchString(a.Repo) {
				return "", fmt.Errorf("repo %q must be owner/name", a.Repo)
			}
			q += " repo:" + a.Repo
		}
		if q == "" {
			return "", fmt.Errorf("search_issues needs a query or a repo")
		}
		v := url.Values{"q": {q}, "per_page": {strconv.Itoa(perPage)}}
		return "/search/issues?" + v.Encode(), nil
	case "get_issue":
		if err := needRepo(); err != nil {
			return "", err
		}
		return fmt.Sprintf("/repos/%s/issues/%d", a.Repo, a.Number), nil
	case "get_pull":
		if err := needRepo(); err != nil {
			return "", err
		}
		return fmt.Sprintf("/repos/%s/pulls/%d", a.Repo, a.Number), nil
	case "list_comments":
		if err := needRepo(); err != nil {
			return "", err
		}
		return fmt.Sprintf("/repos/%s/issues/%d/comments?per_page=%d", a.Repo, a.Number, perPage), nil
	}
	return "", fmt.Errorf("unknown action %q: use search_issues, get_issue, get_pull or list_comments", a.Action)
}

// get calls the API and returns the body of a 2xx response.
func get(path string) ([]byte, error) {
	req := guest.Request{
		Method: "GET",
		URL:    api + path,
		Headers: map[string]string{
			"Accept":               "application/vnd.github+json",
			"X-GitHub-Api-Version": "2022-11-28",
			"User-Agent":           "talon-github-tool",
		},
	}
	if guest.HasSecret(credential) {
		req.Credential = credential
	}
	resp, err := guest.HTTP(req)
	if err != nil {
		return nil, fmt.Errorf("github: %w", err)
	}
	if resp.Status < 200 || resp.Status > 299 {
		return nil, apiError(resp.Status, []byte(resp.Body), req.Credential != "")
	}
	if resp.Truncated {
		return nil, fmt.Errorf("github: response too large")
	}
	return []byte(resp.Body), nil
}
