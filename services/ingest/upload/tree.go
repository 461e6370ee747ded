package upload

import (
	"fmt"
	"os"
	"strings"
)

// The tree mirrors everything Extract has created under dir. dir starts
// empty and only Extract writes to it, so the tree is the truth about what is
// on disk: entries are checked against it without following anything, and
// symlinks are resolved against it once the upload is complete.

type kind uint8

const (
	kindGone kind = iota // removed: a later entry replaced it
	kindDir
	kindFile
	kindSymlink
)

type node struct {
	kind     kind
	parent   *node
	children map[string]*node // directories
	target   string           // symlinks
	name     string           // path from dir, for messages
}

type tree struct {
	root  *os.Root
	top   *node
	files int // nodes that are not directories

	// The directory the last entry went into, opened as a Root, so that
	// consecutive entries in one directory do not resolve its path again.
	cachedDir  *node
	cachedRoot *os.Root
}

func (t *tree) init(root *os.Root) {
	t.root = root
	t.top = &node{kind: kindDir, children: map[string]*node{}, name: "."}
}

// dirRoot returns d opened as a Root.
func (t *tree) dirRoot(d *node) (*os.Root, error) {
	if d == t.top {
		return t.root, nil
	}
	if d == t.cachedDir {
		return t.cachedRoot, nil
	}
	t.closeDirRoot()
	r, err := t.root.OpenRoot(d.name)
	if err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	t.cachedDir, t.cachedRoot = d, r
	return r, nil
}

func (t *tree) closeDirRoot() {
	if t.cachedRoot != nil {
		t.cachedRoot.Close()
		t.cachedDir, t.cachedRoot = nil, nil
	}
}

// parentOf returns the directory that is to hold the entry name (clean,
// relative) and the entry's last path element, creating missing directories.
// It refuses to go through anything but a directory made by this upload.
func (t *tree) parentOf(name string) (*node, string, error) {
	d := t.top
	rest := name
	for {
		i := strings.IndexByte(rest, '/')
		if i < 0 {
			return d, rest, nil
		}
		elem := rest[:i]
		rest = rest[i+1:]
		c := d.children[elem]
		if c == nil {
			var err error
			if c, err = t.mkdir(d, elem, 0o755); err != nil {
				return nil, "", err
			}
		}
		switch c.kind {
		case kindFile:
			return nil, "", rejectf("entry %s is inside %s, which is a file", quote(name), quote(c.name))
		case kindSymlink:
			return nil, "", rejectf("entry %s is inside %s, which is a symlink: entries may not be written through symlinks", quote(name), quote(c.name))
		}
		d = c
	}
}

func (t *tree) add(d *node, elem string, k kind) *node {
	n := &node{kind: k, parent: d, name: elem}
	if d != t.top {
		n.name = d.name + "/" + elem
	}
	if k == kindDir {
		n.children = map[string]*node{}
	} else {
		t.files++
	}
	d.children[elem] = n
	return n
}

func (t *tree) mkdir(d *node, elem string, perm os.FileMode) (*node, error) {
	dr, err := t.dirRoot(d)
	if err != nil {
		return nil, err
	}
	if err := dr.Mkdir(elem, perm); err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	if err := dr.Chmod(elem, perm); err != nil { // whatever the umask
		return nil, fmt.Errorf("upload: %w", err)
	}
	return t.add(d, elem, kindDir), nil
}

// clear removes what is at elem in d, if anything, so that a later entry of
// the same name can take its place: the last entry wins. A directory is
// replaced only while empty. name is the entry, for messages.
func (t *tree) clear(d *node, elem, name string) error {
	old := d.children[elem]
	if old == nil {
		return nil
	}
	if old.kind == kindDir {
		if len(old.children) > 0 {
			return rejectf("entry %s would replace the directory %s, which already holds entries", quote(name), quote(old.name))
		}
		if old == t.cachedDir {
			t.closeDirRoot()
		}
	} else {
		t.files--
	}
	dr, err := t.dirRoot(d)
	if err != nil {
		return err
	}
	if err := dr.Remove(elem); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	old.kind = kindGone
	delete(d.children, elem)
	return nil
}

// lookup returns the node at the clean relative path name, without going
// through symlinks, or nil.
func (t *tree) lookup(name string) *node {
	n := t.top
	for _, elem := range strings.Split(name, "/") {
		if n.kind != kindDir {
			return nil
		}
		if n = n.children[elem]; n == nil {
			return nil
		}
	}
	return n
}

// Resolution outcomes.
const (
	resolvedInside = iota
	resolvedOutside
	resolvedTooDeep
)

const (
	maxHops = 40   // symlinks followed in one resolution, as Linux
	maxWork = 1024 // path elements looked at in one resolution
)

// resolve follows the symlink l through the tree as the kernel would, and
// tells whether it leads outside dir. Resolution stops, inside, where the
// kernel would fail (a missing element, or a file with elements after it).
func (t *tree) resolve(l *node) int {
	var stack []string // pending path elements, the next one last
	push := func(target string) bool {
		elems := strings.Split(target, "/")
		if len(stack)+len(elems) > maxWork {
			return false
		}
		for i := len(elems) - 1; i >= 0; i-- {
			stack = append(stack, elems[i])
		}
		return true
	}
	if !push(l.target) {
		return resolvedTooDeep
	}
	d, hops, work := l.parent, 0, 0
	for len(stack) > 0 {
		if work++; work > maxWork {
			return resolvedTooDeep
		}
		elem := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		switch elem {
		case "", ".":
			continue
		case "..":
			if d == t.top {
				return resolvedOutside
			}
			d = d.parent
			continue
		}
		n := d.children[elem]
		switch {
		case n == nil || n.kind == kindFile:
			return resolvedInside
		case n.kind == kindSymlink:
			if hops++; hops > maxHops || !push(n.target) {
				return resolvedTooDeep
			}
		default:
			d = n
		}
	}
	return resolvedInside
}
