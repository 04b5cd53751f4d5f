package deploy

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// readmeCommands returns the command lines of README.md's code blocks,
// continuation lines joined, each as its words.
func readmeCommands(t *testing.T) [][]string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var cmds [][]string
	in, cur := false, ""
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "```") {
			in, cur = !in, ""
			continue
		}
		if !in {
			continue
		}
		if before, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur += before + " "
			continue
		}
		cur += trimmed
		if before, _, ok := strings.Cut(cur, " #"); ok {
			cur = before
		}
		if words := strings.Fields(cur); len(words) > 0 {
			cmds = append(cmds, words)
		}
		cur = ""
	}
	return cmds
}

// TestReadmeConfigCheck: the --config.check command deploy/README.md
// gives passes with the files its install steps put in place.
func TestReadmeConfigCheck(t *testing.T) {
	n := 0
	for _, words := range readmeCommands(t) {
		if words[0] != "linkgate" || !slices.Contains(words, "--config.check") {
			continue
		}
		n++
		rw := hostRoot(t, t.TempDir())
		args := slices.Clone(words[1:])
		for i := range args {
			args[i] = rw(args[i])
		}
		configCheck(t, "README.md", withoutFlags(args, "--config.check"))
	}
	if n == 0 {
		t.Error("README.md shows no `linkgate ... --config.check` command")
	}
}

// TestReadmeShowsTheSecuredWait: the secured Job's `linkgate wait`, as
// README.md shows it, is the manifest's.
func TestReadmeShowsTheSecuredWait(t *testing.T) {
	var want []string
	for _, w := range workloads(loadManifests(t)) {
		for _, c := range allContainers(w.spec) {
			if _, ok := waitCommand(c); ok && w.dir == "kubernetes/secured" {
				want = strings.Fields(c.Command[2])
			}
		}
	}
	if want == nil {
		t.Fatal("no secured Job waits on the gate")
	}
	for _, words := range readmeCommands(t) {
		if slices.Equal(words, want) {
			return
		}
	}
	t.Errorf("README.md does not show the secured Job's command:\n%s", strings.Join(want, " "))
}

// TestReadmeListsEveryFile: the table of deploy/README.md names every
// file here.
func TestReadmeListsEveryFile(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		switch {
		case path == "README.md", path == "go.mod", path == "go.sum", strings.HasSuffix(path, "_test.go"):
			return nil
		}
		if !strings.Contains(string(b), "`"+filepath.ToSlash(path)+"`") {
			t.Errorf("README.md does not name %s", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
