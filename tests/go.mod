module github.com/open-balena-builder/builder/tests

go 1.26
