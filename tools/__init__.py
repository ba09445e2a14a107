"""Scripts that train and fit the embedded default model and generate shipped files (example workflows, the README
picture). Each runs as ``python tools/<name>.py``; tests import some of them as ``tools.<name>``, which is why this
folder is a package.
"""
