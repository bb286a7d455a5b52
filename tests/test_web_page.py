"""The web page end to end: `layerseek serve` in its own process, driven in real headless Chromium
(Debian's `chromium`) by Playwright. The test installs Chromium with apt-get when it is missing
and it may (root); set LAYERSEEK_SKIP_BROWSER=1 to skip it on a machine where it may not."""
from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
from pathlib import Path
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from layerseek.index import Index

PARIS = ["paris_defense_000000.jpg", "paris_eiffel_000000.jpg", "paris_invalides_000002.jpg",
         "paris_louvre_000004.jpg", "paris_moulinrouge_000003.jpg"]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _chromium() -> str:
    path = shutil.which("chromium")
    if path:
        return path
    if os.environ.get("LAYERSEEK_SKIP_BROWSER") == "1":
        pytest.skip("LAYERSEEK_SKIP_BROWSER=1: no browser test")
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        done = subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, capture_output=True,
                              text=True, timeout=900)
        if done.returncode == 0 and shutil.which("chromium"):
            return shutil.which("chromium")
        pytest.fail(f"could not install chromium: {done.stderr[-500:]}")
    pytest.fail("chromium is missing: `apt-get install chromium` (or set LAYERSEEK_SKIP_BROWSER=1)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serving(index_dir):
    """`layerseek serve INDEX` in its own process; yields its URL once /health answers."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "layerseek.cli", "serve", str(index_dir), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    try:
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    proc.kill()
                    pytest.fail(f"the server did not start: {proc.stdout.read()[-2000:]}")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.fixture(scope="module")
def server(copy_paris, tmp_path_factory):
    root = tmp_path_factory.mktemp("web")
    photos = copy_paris(root / "photos", 5)
    with Index.create(root / "idx", "gem", backbone="mobilenet_v2", layers=("s32", "last"), max_side=256) as idx:
        idx.add_folder(photos)
    with _serving(root / "idx") as url:
        yield url, photos, root


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module (Playwright's sync API runs one instance at a time)."""
    from playwright.sync_api import sync_playwright

    exe = _chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(server, browser):
    pg = browser.new_page(viewport={"width": 1200, "height": 900})
    yield pg
    pg.close()


def _results(page) -> list[str]:
    page.wait_for_selector("#results .hit", timeout=60_000)
    return [re.split(r"\.\s", n, maxsplit=1)[1] for n in page.locator("#results .hit .name").all_inner_texts()]


def test_pick_an_image_see_matches_open_one(server, page, tmp_path):
    url, photos, root = server
    page.goto(url + "/")
    page.wait_for_function("() => document.getElementById('info').textContent === '5 photos indexed · search by example'",
                           timeout=30_000)
    page.set_input_files("#file", str(photos / PARIS[2]))
    names = _results(page)
    assert names[0] == PARIS[2] and len(names) == 5
    assert page.inner_text("#status").startswith("5 matches · ")
    scores = [float(s) for s in page.locator("#results .hit .score").all_inner_texts()]
    assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(1.0, abs=1e-3)
    # every thumbnail really loaded
    page.wait_for_function("() => [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)",
                           timeout=30_000)
    page.screenshot(path=str(root / "page.png"))
    page.locator("#results .hit").first.click()
    page.wait_for_selector("#viewer.open", timeout=10_000)
    page.wait_for_function("() => document.getElementById('full').complete && document.getElementById('full').naturalWidth > 0",
                           timeout=30_000)
    assert PARIS[2] in page.inner_text("#caption")
    # shown as a 1024 px JPEG (a browser may not show a HEIC original); the original one click away
    assert page.get_attribute("#full", "src").startswith("/thumbnails/")
    assert page.get_attribute("#full", "src").endswith("?size=1024")
    assert page.locator("#caption a", has_text="open the original").get_attribute("href").startswith("/images/")
    page.keyboard.press("Escape")
    assert not page.is_visible("#viewer")


def test_a_photo_the_browser_cannot_show_is_shown_as_the_server_read_it(server, page, tmp_path):
    """A TIFF (Chromium shows none; nor HEIC outside Safari) dropped on the page: the search asks
    the server for the query as it read it, and the page shows that JPEG where the photo goes."""
    from PIL import Image

    url, photos, _ = server
    tiff = tmp_path / "query.tif"
    Image.open(photos / PARIS[2]).save(tiff)
    page.goto(url + "/")
    page.set_input_files("#file", str(tiff))
    assert _results(page)[0] == PARIS[2]
    page.wait_for_function("() => document.getElementById('preview').complete && "
                           "document.getElementById('preview').naturalWidth > 0", timeout=30_000)
    assert page.get_attribute("#preview", "src").startswith("blob:")  # the server's JPEG (Chromium shows no TIFF)
    assert page.is_visible("#preview")


def test_a_photo_the_browser_cannot_show_is_previewed_while_its_search_runs(server, browser, tmp_path):
    """The search held back: the page has asked the server for a small JPEG of the dropped TIFF
    (POST /preview; a HEIC's own thumbnail makes it in milliseconds) and shows it before any
    result; the search's answer then brings its own (as large as the viewer asks), which takes
    its place."""
    from PIL import Image

    url, photos, _ = server
    tiff = tmp_path / "held.tif"
    Image.open(photos / PARIS[1]).save(tiff)
    pg = browser.new_page(viewport={"width": 1200, "height": 900})
    held = []
    pg.route(lambda u: "/search?" in u, lambda route: held.append(route))  # let through once the preview shows
    try:
        pg.goto(url + "/")
        pg.set_input_files("#file", str(tiff))
        shown = "() => { const p = document.getElementById('preview'); return p.complete && p.naturalWidth > 0; }"
        pg.wait_for_function(shown, timeout=30_000)
        size = pg.evaluate("() => [document.getElementById('preview').naturalWidth, "
                           "document.getElementById('preview').naturalHeight]")
        assert max(size) == 256 and pg.is_visible("#preview") and pg.locator("#results .hit").count() == 0
        assert len(held) == 1
        early = pg.get_attribute("#preview", "src")
        held[0].continue_()
        assert _results(pg)[0] == PARIS[1]
        # the search's own JPEG of the query (this index reads photos at 256 px) takes its place
        pg.wait_for_function(f"() => document.getElementById('preview').src !== {early!r}", timeout=30_000)
        assert pg.get_attribute("#preview", "src").startswith("blob:") and pg.is_visible("#preview")
    finally:
        pg.close()


def test_drop_an_image_and_see_errors(server, page):
    url, photos, _ = server
    page.goto(url + "/")
    b64 = base64.b64encode((photos / PARIS[4]).read_bytes()).decode()
    make_transfer = """([b64, name, type]) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], name, {type}));
        return dt; }"""
    dt = page.evaluate_handle(make_transfer, [b64, "dropped.jpg", "image/jpeg"])
    page.dispatch_event("#drop", "drop", {"dataTransfer": dt})
    assert _results(page)[0] == PARIS[4]
    # a file that is not an image: a clear error on the page, no results
    dt = page.evaluate_handle(make_transfer, [base64.b64encode(b"just text").decode(), "notes.txt", "text/plain"])
    page.dispatch_event("#drop", "drop", {"dataTransfer": dt})
    page.wait_for_selector("#status.error", timeout=30_000)
    assert "415" in page.inner_text("#status") and "notes.txt: not an image" in page.inner_text("#status")
    assert page.locator("#results .hit").count() == 0


def test_a_photo_larger_than_the_server_takes_is_said_before_it_is_sent(server, browser, tmp_path):
    """A camera's RAW file is often larger than the 20 MiB a server takes by default: the page says
    so, with the option that changes it, before sending anything (a refusal after the upload starts
    reaches a browser as a dropped connection, if at all)."""
    url, _, _ = server
    big = tmp_path / "IMG_0001.NEF"
    big.write_bytes(b"\0" * 21_500_000)
    pg = browser.new_page(viewport={"width": 1200, "height": 900})
    sent = []
    pg.on("request", lambda r: sent.append(r.url) if "/search" in r.url or "/preview" in r.url else None)
    try:
        pg.goto(url + "/")
        pg.wait_for_function("() => document.getElementById('info').textContent.includes('indexed')", timeout=30_000)
        pg.set_input_files("#file", str(big))
        pg.wait_for_selector("#status.error", timeout=10_000)
        assert ("IMG_0001.NEF is 21.5 MB, more than this server takes (21.0 MB): start it with --max-upload-mb 21"
                in pg.inner_text("#status"))
        assert sent == [] and pg.locator("#results .hit").count() == 0
    finally:
        pg.close()


def test_verified_matches_are_marked_same(page, data_dir, tmp_path):
    """On an index that stores local features, the page says which results show the same object."""
    covers = tmp_path / "covers"
    covers.mkdir()
    for i in ("001", "002", "003", "004"):
        shutil.copy(data_dir / "smvs-dvd-covers" / "Reference" / f"{i}.jpg", covers / f"{i}.jpg")
    with Index.create(tmp_path / "idx", "rmac", backbone="mobilenet_v2", max_side=512, verify=True) as idx:
        idx.add_folder(covers)
    with _serving(tmp_path / "idx") as url:
        page.goto(url + "/")
        page.set_input_files("#file", str(data_dir / "smvs-dvd-covers" / "Droid" / "003.jpg"))
        assert _results(page)[0] == "003.jpg"
        scores = page.locator("#results .hit .score").all_inner_texts()
        assert scores[0].startswith("✓ ") and scores[0].endswith(" inliers")
        assert not any(s.startswith("✓") for s in scores[1:])
        assert page.locator("#results .hit.verified").count() == 1
        # the verified result stands apart from the merely similar ones, under its own heading
        assert page.locator("#same .hit").count() == 1 and page.locator("#similar .hit").count() == 3
        assert page.locator("#same h2").inner_text().startswith("Same object or place (1)")
        assert page.locator("#similar h2").inner_text().startswith("Similar (3)")
        page.screenshot(path=str(tmp_path / "verified.png"))
        # the viewer: the query beside the result, the correspondences that verified it drawn between
        page.locator("#same .hit").first.click()
        page.wait_for_selector("#viewer.open", timeout=10_000)
        page.wait_for_function("() => ['vq', 'full'].every(i => document.getElementById(i).complete && "
                               "document.getElementById(i).naturalWidth > 0)", timeout=30_000)
        page.wait_for_function("() => document.querySelectorAll('#lines line').length >= 10", timeout=10_000)
        assert page.locator("#caption").inner_text().startswith("1. ") and page.is_disabled("#prev")
        page.screenshot(path=str(tmp_path / "viewer.png"))
        page.keyboard.press("ArrowRight")  # next: a similar result, with no lines
        assert page.locator("#caption").inner_text().startswith("2. ")
        assert page.locator("#lines line").count() == 0 and not page.is_disabled("#prev")
        page.click("#prev")
        assert page.locator("#caption").inner_text().startswith("1. ")
        page.keyboard.press("Escape")
        assert not page.is_visible("#viewer")
        # "search with this photo": the result becomes the query, and is not among its own results
        page.locator("#similar .hit").first.click()
        name = page.locator("#caption").inner_text().split(" · ")[0].split(". ", 1)[1]
        page.click("#again")
        # the page first fetches the photo, then closes the viewer and starts the search in one step
        # (results cleared): until then the old results and their status are still shown
        page.wait_for_function("() => !document.getElementById('viewer').classList.contains('open')", timeout=60_000)
        page.wait_for_function(f"() => document.getElementById('hint').textContent.startsWith({Path(name).name!r})",
                               timeout=60_000)
        page.wait_for_function("() => / · [0-9.]+ s$/.test(document.getElementById('status').textContent)",
                               timeout=60_000)
        again = _results(page)
        assert Path(name).name not in again and len(again) == 3 and not page.is_visible("#viewer")
        # the drop zone answers the keyboard; a phone-sized screen shows two columns
        # (counted on the file input's click, whose default -- the native chooser -- is cancelled: headless
        # Chromium's "filechooser" event came late or never once in CI, which is not this page's doing)
        page.evaluate("window.asked = 0; document.getElementById('file').addEventListener('click', "
                      "(e) => { window.asked += 1; e.preventDefault(); })")
        page.focus("#drop")
        page.keyboard.press("a")
        assert page.evaluate("window.asked") == 0
        page.keyboard.press("Enter")
        page.keyboard.press(" ")
        page.wait_for_function("() => window.asked === 2", timeout=10_000)
        page.set_viewport_size({"width": 390, "height": 844})
        cols = page.evaluate("getComputedStyle(document.querySelector('#results .grid')).gridTemplateColumns")
        assert len(cols.split()) == 2, cols
        assert page.locator("#results .hit").first.get_attribute("title").endswith(".jpg")  # full name on hover


def test_the_header_counts_one_photo_and_says_when_there_is_none(copy_paris, tmp_path, browser):
    """"1 photo indexed", not "1 photos"; an index with none says how to add some."""
    photos = copy_paris(tmp_path / "photos", 1)
    with Index.create(tmp_path / "idx", "gem", backbone="mobilenet_v2", layers=("s32", "last"), max_side=192):
        pass  # an index with no photo yet
    pg = browser.new_page()
    try:
        with _serving(tmp_path / "idx") as url:
            pg.goto(url + "/")
            pg.wait_for_function("() => document.getElementById('info').textContent.startsWith('no photo indexed yet')")
        with Index.open(tmp_path / "idx") as idx:
            idx.add_folder(photos)
        with _serving(tmp_path / "idx") as url:
            pg.goto(url + "/")
            pg.wait_for_function("() => document.getElementById('info').textContent === "
                                 "'1 photo indexed · search by example'")
    finally:
        pg.close()


# -- issue 29, item 4: the page at a desk and on a phone ---------------------------------------
SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


@pytest.fixture(scope="module")
def library(data_dir, tmp_path_factory):
    """15 photos in two folders, verified: 4 covers (one also as an identical file) and 10 of Paris."""
    root = tmp_path_factory.mktemp("library")
    covers, paris = root / "photos" / "covers", root / "photos" / "paris"
    covers.mkdir(parents=True)
    paris.mkdir()
    for i in ("001", "002", "003", "004"):
        shutil.copy(data_dir / "smvs-dvd-covers" / "Reference" / f"{i}.jpg", covers / f"{i}.jpg")
    shutil.copy(covers / "003.jpg", covers / "003 copy.jpg")
    for p in sorted((data_dir / "paris6k-subset" / "jpg").glob("*.jpg"))[:10]:
        shutil.copy(p, paris / p.name)
    with Index.create(root / "idx", "rmac", backbone="mobilenet_v2", max_side=512, verify=True) as idx:
        idx.add_folder(root / "photos")
    with _serving(root / "idx") as url:
        yield url, root


@pytest.fixture(params=list(SIZES))
def sized(request, library, browser):
    context = browser.new_context(viewport=SIZES[request.param], has_touch=request.param == "phone")
    yield request.param, context.new_page(), library[0]
    context.close()


def _shot(page, name: str) -> None:
    """Screenshots for docs/ when LAYERSEEK_SCREENSHOTS names a folder (docs/screenshots)."""
    where = os.environ.get("LAYERSEEK_SCREENSHOTS")
    if where:
        page.screenshot(path=str(Path(where) / f"{name}.png"))


MAKE_TRANSFER = """([b64, name, type]) => {
    const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], name, {type}));
    return dt; }"""


#: [the line breaks inside a card's name or folder, those of them inside a part between _ - . / or
#: spaces that would fit the card's width on a line of its own (a break there is in a word for nothing)]
WRAPS = """() => {
    const breaks = [], needless = [], ctx = document.createElement('canvas').getContext('2d');
    for (const el of document.querySelectorAll('.hit .name, .hit .folder')) {
        const text = el.textContent, r = document.createRange();
        ctx.font = getComputedStyle(el).font;
        let top = null, at = 0;
        for (const node of [...el.childNodes].filter(n => n.nodeType === 3)) {
            for (let i = 0; i < node.length; i++, at++) {
                r.setStart(node, i); r.setEnd(node, i + 1);
                const y = r.getBoundingClientRect().top;
                if (top !== null && y > top + 2) {
                    breaks.push(text);
                    const sep = /[_.\\-\\/\\s]/;
                    if (!sep.test(text[at - 1])) {
                        let a = at, b = at;
                        while (a > 0 && !sep.test(text[a - 1])) a--;
                        while (b < text.length && !sep.test(text[b])) b++;
                        if (ctx.measureText(text.slice(a, b + 1)).width <= el.clientWidth) needless.push(text);
                    }
                }
                top = y;
            }
        }
    }
    return [breaks, needless]; }"""


def _done(page) -> str:
    page.wait_for_function("() => / · [0-9.]+ s$/.test(document.getElementById('status').textContent)", timeout=60_000)
    return page.inner_text("#status")


def test_a_search_shows_progress_then_says_what_it_found(sized, data_dir):
    size, page, url = sized
    page.goto(url + "/")
    page.wait_for_function("() => document.getElementById('info').textContent.startsWith('15 photos indexed')")
    header = page.inner_text("header")
    assert "+" not in header and "rmac" not in header and "mobilenet" not in header  # plain words
    assert page.get_attribute("link[rel=icon]", "href") == "/favicon.svg"
    icon = urllib.request.urlopen(url + "/favicon.svg")
    assert icon.headers["Content-Type"] == "image/svg+xml" and icon.read().startswith(b"<svg")
    _shot(page, f"page-start-{size}")

    def slow(route):  # the search held for a moment: the page shows it is working, and for how long
        time.sleep(1.2)
        route.continue_()

    page.route("**/search?*", slow)
    page.set_input_files("#file", str(data_dir / "smvs-dvd-covers" / "Droid" / "003.jpg"))
    page.wait_for_selector("#status.busy", timeout=10_000)
    page.wait_for_function("() => /^searching with 003.jpg… [1-9][0-9]*\\.[0-9] s$/.test("
                           "document.getElementById('statustext').textContent)", timeout=10_000)
    said = _done(page)
    page.unroute("**/search?*")
    assert said.startswith("1 same object · ") and " similar · " in said and "busy" not in page.get_attribute("#status", "class")
    # the query became a compact bar above the results
    assert "compact" in page.get_attribute("#drop", "class")
    assert page.locator("#drop").bounding_box()["height"] < 100
    # identical files are one card, which names the other
    assert page.locator(".hit .copies").count() == 1
    copies = page.inner_text(".hit .copies")
    assert copies.startswith("+ 1 identical file: ") and ("003 copy.jpg" in copies or copies.endswith("/003.jpg"))
    names = page.locator("#results .hit .name").all_inner_texts()
    assert len(names) == 14 and names[0].endswith(("003.jpg", "003 copy.jpg"))
    # numbered as photos, 1 to 14 (the identical file's own rank, 2, left a gap: "1., 3., 4.")
    assert [n.split(".", 1)[0] for n in names] == [str(i) for i in range(1, 15)], names
    scores = page.locator("#results .hit .score").all_inner_texts()  # the order's reason, in words
    assert scores[0].startswith("✓ ") and "similar" in scores and "0 inliers" not in scores
    # folder and full name readable: the folder on each card, nothing cut on a phone
    assert page.inner_text("#results .hit .folder").endswith("covers")
    if size == "phone":
        cut = page.evaluate("[...document.querySelectorAll('.hit .name, .hit .folder')]"
                            ".filter(e => e.scrollWidth > e.clientWidth + 1).length")
        assert cut == 0
        # a long name breaks after its _ - . or a space (Paris' Flickr names), inside a word only where
        # the word alone is wider than the card (a 32-digit hash)
        breaks, needless = page.evaluate(WRAPS)
        assert breaks and needless == [], needless
    else:  # at a desk each name and folder is one line, cut at its end
        assert page.evaluate(WRAPS) == [[], []]
    page.wait_for_function("() => [...document.querySelectorAll('#results img')].every(i => i.complete)", timeout=30_000)
    _shot(page, f"page-results-{size}")


def test_paste_drop_anywhere_folder_filter_and_more(sized, data_dir):
    size, page, url = sized
    page.goto(url + "/")
    photo = data_dir / "smvs-dvd-covers" / "Canon" / "002.jpg"
    b64 = base64.b64encode(photo.read_bytes()).decode()
    dt = page.evaluate_handle(MAKE_TRANSFER, [b64, "pasted.jpg", "image/jpeg"])
    page.evaluate("(dt) => document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt, bubbles: true}))", dt)
    assert _done(page).startswith("1 same object")
    assert page.inner_text("#results .hit .name").endswith("002.jpg")
    # dropped on the results, far from the drop zone: searched, and the page stays
    page.select_option("#top", "12")
    _done(page)
    dt = page.evaluate_handle(MAKE_TRANSFER, [b64, "dropped.jpg", "image/jpeg"])
    page.dispatch_event("#results", "drop", {"dataTransfer": dt})
    page.wait_for_function("() => document.getElementById('hint').textContent.startsWith('dropped.jpg')")
    _done(page)
    assert page.url.rstrip("/") == url
    assert page.locator("#results .hit").count() == 12  # 12 photos asked, the identical pair in one card
    assert page.is_visible("#more")
    page.click("#more")
    page.wait_for_function("() => document.querySelectorAll('#results .hit').length === 14", timeout=60_000)
    assert not page.is_visible("#more")  # all 15 shown
    # a folder filter, from the folders of the results
    assert page.is_visible("#folderbox")
    folders = page.locator("#folder option").all_inner_texts()
    assert folders[0] == "all folders" and [f.rsplit("/", 1)[-1] for f in folders[1:]] == ["covers", "paris"]
    page.select_option("#folder", index=2)
    assert page.locator("#results .hit").count() == 10
    assert all(f.endswith("paris") for f in page.locator("#results .hit .folder").all_inner_texts())


def test_a_part_of_the_photo_is_searched_with(sized, data_dir, tmp_path):
    """Two covers side by side in one photo: both are the same object as the whole; a rectangle
    dragged over the right one searches with that part alone, and its lines start there."""
    from PIL import Image

    size, page, url = sized
    left, right = (Image.open(data_dir / "smvs-dvd-covers" / "Reference" / f"{i}.jpg").convert("RGB").resize((500, 500))
                   for i in ("001", "002"))
    both = Image.new("RGB", (1000, 500), "white")
    both.paste(left, (0, 0))
    both.paste(right, (500, 0))
    both.save(tmp_path / "two covers.jpg", quality=92)
    page.goto(url + "/")
    page.set_input_files("#file", str(tmp_path / "two covers.jpg"))
    assert _done(page).startswith("2 same objects")
    assert not page.is_visible("#whole")
    page.click("#part")
    assert page.is_visible("#picker") and page.is_disabled("#pick")
    page.wait_for_function("() => document.getElementById('pimg').complete")
    box = page.locator("#pimg").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.55, box["y"] + box["height"] * 0.05)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.5)
    page.mouse.move(box["x"] + box["width"] * 0.95, box["y"] + box["height"] * 0.95, steps=4)
    page.mouse.up()
    assert page.is_enabled("#pick") and page.is_visible("#box")
    _shot(page, f"part-{size}")
    with page.expect_request(lambda r: "/search?" in r.url) as sent:
        page.click("#pick")
    assert "region=0.55" in sent.value.url
    page.wait_for_function("() => document.getElementById('hint').textContent.startsWith('a part of two covers.jpg')")
    said = _done(page)
    assert said.startswith("1 same object · "), said
    assert page.inner_text("#results .hit .name").endswith("002.jpg") and page.is_visible("#whole")
    # the part is marked on the photo in the bar above the results
    mark, shown_photo = page.locator("#regionmark").bounding_box(), page.locator("#preview").bounding_box()
    assert page.is_visible("#regionmark")
    assert abs((mark["x"] - shown_photo["x"]) / shown_photo["width"] - 0.55) < 0.03
    assert abs(mark["width"] / shown_photo["width"] - 0.40) < 0.03
    # the viewer draws the lines from that part of the whole photo
    page.click("#results .hit")
    page.wait_for_function("() => document.querySelectorAll('#lines line').length > 10")
    xs = page.evaluate("() => { const q = document.getElementById('vq').getBoundingClientRect(),"
                       " p = document.getElementById('pair').getBoundingClientRect();"
                       " return [...document.querySelectorAll('#lines line')].map(l =>"
                       " (Number(l.getAttribute('x1')) + p.left - q.left) / q.width); }")
    assert min(xs) > 0.5, min(xs)
    page.keyboard.press("Escape")
    page.click("#whole")
    page.wait_for_function("() => document.getElementById('hint').textContent.startsWith('two covers.jpg')")
    assert _done(page).startswith("2 same objects") and not page.is_visible("#whole")
    assert not page.is_visible("#regionmark")
    # without a pointer: the frame has the focus, an arrow puts the middle half there, arrows move
    # it (5 % a press), Shift and an arrow resize it, Enter searches
    page.click("#part")
    assert page.evaluate("document.activeElement.id") == "frame"
    page.keyboard.press("ArrowRight")  # the middle half: x 0.25, w 0.5
    for _ in range(5):
        page.keyboard.press("ArrowRight")  # to x 0.5
    for _ in range(2):
        page.keyboard.press("Shift+ArrowUp")  # h 0.4
    with page.expect_request(lambda r: "/search?" in r.url) as sent:
        page.keyboard.press("Enter")
    from urllib.parse import parse_qs, urlsplit

    assert parse_qs(urlsplit(sent.value.url).query)["region"] == ["0.5000,0.2500,0.5000,0.4000"], sent.value.url
    assert _done(page).startswith("1 same object · ")
    assert page.inner_text("#results .hit .name").endswith("002.jpg")


def test_the_viewer_keeps_focus_links_the_original_and_stacks_on_a_phone(sized, data_dir):
    size, page, url = sized
    page.goto(url + "/")
    page.set_input_files("#file", str(data_dir / "smvs-dvd-covers" / "Palm" / "001.jpg"))
    _done(page)
    page.locator("#same .hit").first.click()
    page.wait_for_selector("#viewer.open")
    page.wait_for_function("() => document.querySelectorAll('#lines line').length >= 10", timeout=30_000)
    hit_id = page.get_attribute("#same .hit", "data-id")
    assert page.get_attribute("#caption a[download]", "href") == f"/images/{hit_id}"
    assert page.get_attribute("#caption a[target=_blank]", "href") == f"/images/{hit_id}"
    for _ in range(9):  # Tab never leaves the dialog
        page.keyboard.press("Tab")
        assert page.evaluate("document.getElementById('viewer').contains(document.activeElement)")
    q, d = page.locator("#vq").bounding_box(), page.locator("#full").bounding_box()
    if size == "phone":  # the query above the result, each nearly the screen's width
        assert q["y"] + q["height"] <= d["y"] + 1 and d["width"] > 300
    else:
        assert q["x"] + q["width"] <= d["x"] + 1
    _shot(page, f"viewer-{size}")
    if size == "phone":  # a swipe to the left shows the next result
        page.evaluate("""() => { const t = document.getElementById('pair');
            const touch = (x) => new Touch({identifier: 1, target: t, clientX: x, clientY: 300});
            t.dispatchEvent(new TouchEvent('touchstart', {touches: [touch(300)], changedTouches: [touch(300)], bubbles: true}));
            t.dispatchEvent(new TouchEvent('touchend', {touches: [], changedTouches: [touch(120)], bubbles: true})); }""")
        assert page.inner_text("#caption").startswith("2. ")
        assert page.evaluate("getComputedStyle(document.getElementById('pair')).touchAction") == "pinch-zoom"
    # "search with this photo": the photo becomes the query and is not among its own results
    shown_id = page.evaluate("shown[at].id")
    page.click("#again")
    page.wait_for_function("() => !document.getElementById('viewer').classList.contains('open')", timeout=60_000)
    page.wait_for_function("() => document.getElementById('status').textContent.startsWith('searching')", timeout=60_000)
    _done(page)
    ids = [int(i) for i in page.locator("#results .hit").evaluate_all("cards => cards.map(c => c.dataset.id)")]
    assert shown_id not in ids and len(ids) >= 13  # 14 cards less itself (14 if it had an identical twin)


@pytest.mark.parametrize("size", list(SIZES))
def test_the_page_follows_a_dark_system_setting(library, browser, size):
    context = browser.new_context(viewport=SIZES[size], color_scheme="dark")
    page = context.new_page()
    page.goto(library[0] + "/")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(21, 24, 30)"
    page.emulate_media(color_scheme="light")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(247, 248, 250)"
    context.close()
