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
	var cmds [][]string
	for _, c := range readmeSectionCommands(t) {
		cmds = append(cmds, c.words)
	}
	return cmds
}

// readmeCommand is a command line of README.md and the title of the
// section (##) it is in.
type readmeCommand struct {
	section string
	words   []string
}

func readmeSectionCommands(t *testing.T) []readmeCommand {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var cmds []readmeCommand
	in, cur, section := false, "", ""
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "```") {
			in, cur = !in, ""
			continue
		}
		if !in {
			if title, ok := strings.CutPrefix(line, "## "); ok {
				section = title
			}
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
			cmds = append(cmds, readmeCommand{section, words})
		}
		cur = ""
	}
	return cmds
}

// TestReadmeConfigCheck: the --config.check commands deploy/README.md
// gives pass with the files its install steps put in place: those of
// section "hyper2kvm" on a hyper2kvm host.
func TestReadmeConfigCheck(t *testing.T) {
	n, h2k := 0, 0
	for _, c := range readmeSectionCommands(t) {
		words := c.words
		if words[0] != "linkgate" || !slices.Contains(words, "--config.check") {
			continue
		}
		n++
		layout := hostRoot
		if c.section == "hyper2kvm" {
			layout = h2kHostRoot
			h2k++
		}
		rw := layout(t, t.TempDir())
		args := slices.Clone(words[1:])
		for i := range args {
			args[i] = rw(args[i])
		}
		args = withoutFlags(args, "--config.check")
		if c.section == "hyper2kvm" {
			checkHyper2kvmConfig(t, "README.md, hyper2kvm", args, "output_dir → --hyper2kvm.control-socket")
		} else {
			configCheck(t, "README.md", args)
		}
	}
	if n == 0 || h2k == 0 {
		t.Errorf("README.md shows %d `linkgate ... --config.check` commands, %d in section hyper2kvm; want some in both", n, h2k)
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
