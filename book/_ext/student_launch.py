"""Launch buttons open the student edition: Colab and Binder get student/notebooks/NAME.ipynb.

The theme's launch buttons open the page's own notebook, which is the instructor's edition
with every solution in it. This extension points them at the committed student edition
(`python -m bertcourse student --out student/notebooks`, kept current by a test) and adds a
second Colab link, "with solutions", to the chapter as the book shows it.
"""

from __future__ import annotations

from pathlib import Path

STUDENT_DIR = "student/notebooks"


def _student_links(app, pagename, templatename, context, doctree) -> None:
    if not pagename.startswith("notebooks/"):
        return
    name = pagename.removeprefix("notebooks/")
    if not (Path(app.srcdir) / STUDENT_DIR / f"{name}.ipynb").is_file():
        raise FileNotFoundError(
            f"{STUDENT_DIR}/{name}.ipynb is missing, so the launch buttons of {pagename} would "
            f"open the solutions: run `make student` and commit {STUDENT_DIR}."
        )
    for group in context.get("header_buttons", []):
        if group.get("label") != "launch-buttons":
            continue
        buttons = []
        for button in group["buttons"]:
            url = button.get("url", "")
            if button.get("text") == "Colab":
                student = url.replace("/notebooks/", f"/{STUDENT_DIR}/", 1)
                buttons.append({**button, "text": "Colab (student)", "url": student,
                                "tooltip": "Open the exercises without solutions on Colab"})  # fmt: skip
                buttons.append({**button, "text": "Colab (solutions)", "url": url,
                                "tooltip": "Open this chapter with its solutions on Colab"})  # fmt: skip
            elif button.get("text") == "Binder":  # ...?urlpath=tree/notebooks/NAME.ipynb
                student = url.replace("/notebooks/", f"/{STUDENT_DIR}/", 1)
                buttons.append({**button, "text": "Binder (student)", "url": student})
            else:
                buttons.append(button)
        group["buttons"] = buttons


def setup(app):
    app.connect("html-page-context", _student_links, priority=502)  # after the theme's (501)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
