#!/usr/bin/env python3
"""Renders the sample documents Plait ships for its README and tests.

    python3 tests/samples/generate.py      # needs Pillow and the DejaVu fonts

Every document here is made up by this script: the companies, people and
numbers are fictional. Each is rendered with known text, so OCR output can
be scored against it (character error rate), and has a known class, so
classification can be checked. The outputs are committed; this script only
has to run again when the documents change. It is deterministic: the same
Pillow and fonts give the same files.

Variants of each document:
- `<name>.png`: a clean page, 150 dpi.
- `<name>-scan.jpg`: scan-like: slightly rotated, blurred, speckled and
  JPEG-compressed.
- `<name>.tiff` (some): a clean grayscale TIFF.
- `<name>.pdf` (some): a PDF with a text layer, written by hand below.
- `<name>-scan.pdf` (one): a scanned PDF: the scan image, no text layer.
- `<name>-stub-scan.jpg` (one): the title and two lines on a small slip,
  scanned: a document an emulated aarch64 host (`scripts/edge`, under
  qemu-user, where a full page takes tens of minutes) reads in minutes.

`manifest.json` lists every file with its label and the exact text lines.
"""

import json
import random
import zlib
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

HERE = Path(__file__).resolve().parent
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
DPI = 150
PAGE = (1240, 1754)  # A4 at 150 dpi
STUB = (560, 260)  # a slip: the title and two lines, margins of 40
MARGIN = 110

DOCUMENTS = {
    "invoice": {
        "label": "invoice",
        "title": "INVOICE",
        "lines": [
            "Northwind Supplies Ltd",
            "12 Harbour Road, Portsmouth PO1 3AX",
            "Invoice number: 2026-0042",
            "Invoice date: 3 March 2026",
            "Due date: 2 April 2026",
            "Bill to: Plait Example GmbH, Accounts Payable",
            "Description                Qty    Unit price     Amount",
            "Office chairs, model K2      4        180.00      720.00",
            "Standing desk frames         2        215.00      430.00",
            "Delivery and installation    1        100.00      100.00",
            "Subtotal: 1,250.00 EUR",
            "VAT 0% (reverse charge): 0.00 EUR",
            "Total due: 1,250.00 EUR",
            "Pay by bank transfer to IBAN GB29 NWBK 6016 1331 9268 19",
        ],
        # The stub: the title and these lines (indices) on a small slip.
        "stub": [2, 12],
        "variants": ["png", "scan.jpg", "tiff", "pdf", "scan.pdf", "stub-scan.jpg"],
    },
    "receipt": {
        "label": "receipt",
        "title": "RECEIPT",
        "lines": [
            "Corner Coffee House",
            "88 Market Street, Leeds",
            "Date: 14/02/2026 08:42",
            "Flat white              3.40",
            "Almond croissant        2.90",
            "Sparkling water         1.60",
            "Total                   7.90",
            "Paid by card ending 4417",
            "Thank you for your visit!",
        ],
        "variants": ["png", "scan.jpg"],
    },
    "contract": {
        "label": "contract",
        "title": "SERVICE AGREEMENT",
        "lines": [
            "This agreement is made on 1 April 2026 between",
            "Bluefield Analytics Ltd (the Provider) and",
            "Harrow and Finch LLP (the Client).",
            "1. Services. The Provider shall deliver monthly data reports.",
            "2. Term. This agreement runs for twelve months from signing.",
            "3. Fees. The Client shall pay 2,400.00 GBP per month.",
            "4. Termination. Either party may terminate with 60 days notice.",
            "5. Governing law. This agreement is governed by English law.",
            "Signed for the Provider: M. Okafor, Director",
            "Signed for the Client: J. Lindqvist, Partner",
        ],
        "variants": ["png", "scan.jpg", "pdf"],
    },
    "letter": {
        "label": "letter",
        "title": "",
        "lines": [
            "Greenway Housing Association",
            "4 Elm Court, Bristol BS1 5TR",
            "20 January 2026",
            "Dear Ms Patel,",
            "Thank you for your letter about the repairs to your kitchen.",
            "Our contractor will visit your home on Monday 2 February",
            "between 9am and 1pm to replace the damaged cupboards.",
            "Please call us if this time is not convenient for you.",
            "Yours sincerely,",
            "Daniel Brooks, Tenant Services",
        ],
        "variants": ["png", "scan.jpg", "tiff"],
    },
    "resume": {
        "label": "resume",
        "title": "CURRICULUM VITAE",
        "lines": [
            "Sofia Marchetti",
            "sofia.marchetti@example.org, +44 7700 900123",
            "Profile: data engineer with six years of experience",
            "Experience",
            "2022-2026 Senior Data Engineer, Lumen Retail",
            "2019-2022 Data Engineer, Cobalt Logistics",
            "Education",
            "2015-2019 BSc Computer Science, University of Leeds",
            "Skills: Rust, Python, SQL, stream processing",
        ],
        "variants": ["png", "scan.jpg"],
    },
}


def render(doc: dict, size=PAGE, margin=MARGIN) -> tuple[Image.Image, list[str]]:
    """A clean grayscale page and the lines written on it, in order."""
    page = Image.new("L", size, 255)
    draw = ImageDraw.Draw(page)
    body = ImageFont.truetype(FONT, 30)
    title = ImageFont.truetype(BOLD, 46)
    lines = []
    y = margin
    if doc["title"]:
        draw.text((margin, y), doc["title"], font=title, fill=0)
        lines.append(doc["title"])
        y += 90
    for line in doc["lines"]:
        draw.text((margin, y), line, font=body, fill=0)
        lines.append(line)
        y += 58
    return page, lines


def scanned(page: Image.Image, seed: int) -> Image.Image:
    """The page as a cheap scanner would return it."""
    rng = random.Random(seed)
    scan = page.rotate(rng.uniform(-1.8, 1.8), resample=Image.BICUBIC, fillcolor=250)
    scan = scan.filter(ImageFilter.GaussianBlur(0.8))
    pixels = scan.load()
    # The same density of specks on any size of page.
    specks = 6000 * page.size[0] * page.size[1] // (PAGE[0] * PAGE[1])
    for _ in range(specks):
        x, y = rng.randrange(page.size[0]), rng.randrange(page.size[1])
        pixels[x, y] = rng.choice((90, 140, 200))
    # Slightly grey paper.
    return scan.point(lambda v: int(v * 0.94 + 8))


def pdf_with_text(lines: list[str], has_title: bool) -> bytes:
    """A one-page PDF whose text layer holds `lines` (Helvetica)."""
    ops = ["BT"]
    y = 842 - 60
    for index, line in enumerate(lines):
        size = 20 if has_title and index == 0 else 12
        escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        ops.append(f"/F1 {size} Tf 1 0 0 1 56 {y} Tm ({escaped}) Tj")
        y -= 34 if has_title and index == 0 else 22
    ops.append("ET")
    return build_pdf("\n".join(ops).encode("latin-1"), image=None)


def pdf_with_image(image: Image.Image) -> bytes:
    """A one-page PDF showing `image` full page, with no text layer."""
    import io

    buffer = io.BytesIO()
    image.convert("L").save(buffer, "JPEG", quality=70)
    content = b"q 595 0 0 842 0 0 cm /Im1 Do Q"
    return build_pdf(content, image=(buffer.getvalue(), image.size))


def build_pdf(content: bytes, image) -> bytes:
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        None,  # the page, below
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(zlib.compress(content))
        + zlib.compress(content)
        + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    resources = b"/Font << /F1 5 0 R >>"
    if image is not None:
        data, (width, height) = image
        objects.append(
            b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
            b"/BitsPerComponent 8 /Filter /DCTDecode /Length %d >>\nstream\n" % (width, height, len(data))
            + data
            + b"\nendstream"
        )
        resources += b" /XObject << /Im1 6 0 R >>"
    objects[2] = (
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R /Resources << "
        + resources
        + b" >> >>"
    )
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def main() -> None:
    manifest = []
    for seed, (name, doc) in enumerate(sorted(DOCUMENTS.items())):
        page, lines = render(doc)
        scan = scanned(page, seed)
        for variant in doc["variants"]:
            if variant == "png":
                file = f"{name}.png"
                page.save(HERE / file, "PNG", optimize=True, dpi=(DPI, DPI))
                kind = "clean"
            elif variant == "scan.jpg":
                file = f"{name}-scan.jpg"
                scan.save(HERE / file, "JPEG", quality=55, dpi=(DPI, DPI))
                kind = "scan"
            elif variant == "tiff":
                file = f"{name}.tiff"
                page.save(HERE / file, "TIFF", compression="tiff_deflate", dpi=(DPI, DPI))
                kind = "clean"
            elif variant == "pdf":
                file = f"{name}.pdf"
                (HERE / file).write_bytes(pdf_with_text(lines, bool(doc["title"])))
                kind = "text-layer"
            elif variant == "scan.pdf":
                file = f"{name}-scan.pdf"
                (HERE / file).write_bytes(pdf_with_image(scan))
                kind = "scan"
            elif variant == "stub-scan.jpg":
                file = f"{name}-stub-scan.jpg"
                stub = dict(doc, lines=[doc["lines"][i] for i in doc["stub"]])
                stub_page, stub_lines = render(stub, STUB, 40)
                scanned(stub_page, seed).save(HERE / file, "JPEG", quality=55, dpi=(DPI, DPI))
                manifest.append({"file": file, "label": doc["label"], "kind": "scan", "lines": stub_lines})
                continue
            else:
                raise ValueError(variant)
            manifest.append({"file": file, "label": doc["label"], "kind": kind, "lines": lines})
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {len(manifest)} samples to {HERE}")


if __name__ == "__main__":
    main()
