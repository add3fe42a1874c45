#!/usr/bin/python3
"""Generates the extra preprocessing fixtures of test/preprocess-extra.test.ts and their expected
outputs, using the reference stack itself: Pillow 9.4.0 (Debian 12 `python3-pil`, the version the
goldens were made with) plus a line-for-line re-statement of torchvision 0.14's PIL-path
Resize/CenterCrop and open_clip's ResizeKeepRatio/CenterCropOrPad. It reproduces every
rgb_crop_sha256 of golden/preprocess (checked by `--check-goldens`).

Covers what the goldens do not: GIF (palette, transparency, uncovered screen area, grey-ramp
palette opened as 'L'), TIFF layouts, PNG bit depths and tRNS, greyscale and non-Adobe CMYK JPEG,
WebP with alpha, and the resize_mode / interpolation / fill_color / size options.

Output: <name>.<ext> files and cases.json with, per case, the config and the SHA-256 of the
size x size x 3 uint8 RGB crop (HWC) that precedes ToTensor/Normalize. Not run by CI.
"""
import hashlib, io, json, os, struct, sys, zlib
import numpy as np
import PIL
from PIL import Image, ImageOps

HERE = os.path.dirname(os.path.abspath(__file__))
INTERP = {'bicubic': Image.BICUBIC, 'bilinear': Image.BILINEAR}


def tv_resize_shortest(img, size, interp):
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return img if (w, h) == (new_w, new_h) else img.resize((new_w, new_h), interp)


def tv_center_crop(img, size):
    w, h = img.size
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def resize_keep_ratio_longest(img, size, interp):
    w, h = img.size
    ratio_h, ratio_w = h / size, w / size
    ratio = max(ratio_h, ratio_w) * 1.0 + min(ratio_h, ratio_w) * (1. - 1.0)
    nh, nw = [round(x / ratio) for x in (h, w)]
    return img if (nw, nh) == (w, h) else img.resize((nw, nh), interp)


def center_crop_or_pad(img, size, fill):
    w, h = img.size
    if size > w or size > h:
        ltrb = ((size - w) // 2 if size > w else 0, (size - h) // 2 if size > h else 0,
                (size - w + 1) // 2 if size > w else 0, (size - h + 1) // 2 if size > h else 0)
        nb = len(img.getbands())
        f = tuple([fill] * nb) if nb > 1 else fill   # torchvision _parse_fill
        if img.mode == 'P':
            pal = img.getpalette()
            img = ImageOps.expand(img, border=ltrb, fill=f)
            img.putpalette(pal)
        else:
            img = ImageOps.expand(img, border=ltrb, fill=f)
        w, h = img.size
        if (w, h) == (size, size):
            return img
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def transform(path, size=224, resize_mode='shortest', interpolation='bicubic', fill_color=0):
    img = Image.open(path)
    mode = img.mode
    interp = INTERP[interpolation]
    if resize_mode == 'shortest':
        img = tv_center_crop(tv_resize_shortest(img, size, interp), size)
    elif resize_mode == 'longest':
        img = center_crop_or_pad(resize_keep_ratio_longest(img, size, interp), size, fill_color)
    elif resize_mode == 'squash':
        img = img if img.size == (size, size) else img.resize((size, size), interp)
    if img.mode != 'RGB':
        img = img.convert('RGB')
    a = np.asarray(img, dtype=np.uint8)
    assert a.shape == (size, size, 3), a.shape
    return mode, a


# ---------------------------------------------------------------- synthetic content

def scene(w, h, seed):
    """Gradients, hard edges, 1-px lines and noise: every resampling mistake shows."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    r = (x * 255 // max(w - 1, 1))
    g = (y * 255 // max(h - 1, 1))
    b = ((x // 7 + y // 5) % 2) * 200 + 20
    img = np.stack([r, g, b], -1).astype(np.int32)
    img[h // 3:h // 3 + 1, :, :] = 255
    img[:, w // 2:w // 2 + 1, :] = 0
    img += rng.integers(-12, 13, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def png_chunk(t, data):
    return struct.pack('>I', len(data)) + t + data + struct.pack('>I', zlib.crc32(t + data) & 0xffffffff)


def write_png(path, w, h, depth, ctype, raw_rows, plte=None, trns=None):
    """Minimal PNG writer (filter 0), for bit depths Pillow cannot write."""
    ihdr = struct.pack('>IIBBBBB', w, h, depth, ctype, 0, 0, 0)
    body = b''.join(b'\x00' + r for r in raw_rows)
    out = b'\x89PNG\r\n\x1a\n' + png_chunk(b'IHDR', ihdr)
    if plte is not None:
        out += png_chunk(b'PLTE', plte)
    if trns is not None:
        out += png_chunk(b'tRNS', trns)
    out += png_chunk(b'IDAT', zlib.compress(body, 9)) + png_chunk(b'IEND', b'')
    with open(path, 'wb') as f:
        f.write(out)


def pack_bits(vals, bits):
    out = bytearray()
    per = 8 // bits
    for i in range(0, len(vals), per):
        byte = 0
        for j in range(per):
            v = int(vals[i + j]) if i + j < len(vals) else 0
            byte |= v << (8 - bits * (j + 1))
        out.append(byte)
    return bytes(out)


def make_images():
    files = {}
    rgb = scene(97, 71, 1)
    # --- GIF
    pimg = Image.fromarray(rgb).quantize(colors=61, method=Image.MEDIANCUT, dither=Image.NONE)
    pimg.save(os.path.join(HERE, 'gif_palette_97x71.gif'))
    files['gif_palette_97x71.gif'] = 'P'
    # transparency + a logical screen larger than the frame (uncovered area keeps index trns)
    b = io.BytesIO()
    pimg.save(b, 'GIF', transparency=5)
    data = bytearray(b.getvalue())
    struct.pack_into('<HH', data, 6, 105, 80)
    open(os.path.join(HERE, 'gif_trns_screen_105x80.gif'), 'wb').write(bytes(data))
    # palette: greyscale ramp -> Pillow opens the GIF as 'L' (bicubic, not nearest)
    grey = Image.fromarray(rgb[:, :, 1])
    grey.save(os.path.join(HERE, 'gif_greyramp_97x71.gif'))
    # --- TIFF
    Image.fromarray(rgb).save(os.path.join(HERE, 'tiff_rgb_97x71.tif'))
    rgba = np.dstack([rgb, (np.arange(97)[None, :] * 255 // 96).repeat(71, 0).astype(np.uint8)])
    Image.fromarray(rgba, 'RGBA').save(os.path.join(HERE, 'tiff_rgba_97x71.tif'))
    Image.fromarray(rgb[:, :, 0]).save(os.path.join(HERE, 'tiff_gray_97x71.tif'))
    Image.fromarray(rgb[:, :, 2] > 100).save(os.path.join(HERE, 'tiff_bilevel_97x71.tif'))
    pimg.save(os.path.join(HERE, 'tiff_palette_97x71.tif'))
    Image.fromarray(rgb).convert('CMYK').save(os.path.join(HERE, 'tiff_cmyk_97x71.tif'))
    # --- PNG bit depths, tRNS
    g2 = (rgb[:, :, 0] // 64).astype(np.uint8)
    write_png(os.path.join(HERE, 'png_gray2_97x71.png'), 97, 71, 2, 0, [pack_bits(r, 2) for r in g2])
    p4 = (rgb[:, :, 1] // 16).astype(np.uint8)
    pal = bytes(np.array([[i * 17, 255 - i * 13, (i * 53) % 256] for i in range(16)], np.uint8).tobytes())
    write_png(os.path.join(HERE, 'png_palette4_trns_97x71.png'), 97, 71, 4, 3, [pack_bits(r, 4) for r in p4], plte=pal,
              trns=bytes([0, 128, 255, 0]))
    rgba16 = (rgba.astype(np.uint16) * 257 + np.arange(97, dtype=np.uint16)[None, :, None]).astype('>u2')
    write_png(os.path.join(HERE, 'png_rgba16_97x71.png'), 97, 71, 16, 6, [r.tobytes() for r in rgba16])
    la16 = rgba16[:, :, [0, 3]]
    write_png(os.path.join(HERE, 'png_la16_97x71.png'), 97, 71, 16, 4, [r.tobytes() for r in la16])
    write_png(os.path.join(HERE, 'png_gray_trns_97x71.png'), 97, 71, 8, 0, [r.tobytes() for r in rgb[:, :, 2]],
              trns=struct.pack('>H', 20))
    write_png(os.path.join(HERE, 'png_rgb_trns_97x71.png'), 97, 71, 8, 2, [r.tobytes() for r in rgb],
              trns=struct.pack('>HHH', 255, 255, 255))
    g16 = (rgb[:, :, 0].astype(np.uint16) * 3 + 40).astype('>u2')
    write_png(os.path.join(HERE, 'png_gray16_97x71.png'), 97, 71, 16, 0, [r.tobytes() for r in g16])
    Image.fromarray(rgba[:, :, [0, 3]], 'LA').save(os.path.join(HERE, 'png_la_97x71.png'))
    Image.fromarray(rgb[:, :, 0] > 128).save(os.path.join(HERE, 'png_bilevel_97x71.png'))
    # --- JPEG
    Image.fromarray(rgb[:, :, 1]).save(os.path.join(HERE, 'jpeg_gray_97x71.jpg'), quality=92)
    b = io.BytesIO()
    Image.fromarray(rgb).convert('CMYK').save(b, 'JPEG', quality=92)
    data = b.getvalue()
    i = data.find(b'\xff\xee')     # drop the Adobe APP14 marker: Pillow still inverts, libvips not
    assert i > 0
    ln = struct.unpack('>H', data[i + 2:i + 4])[0]
    open(os.path.join(HERE, 'jpeg_cmyk_noadobe_97x71.jpg'), 'wb').write(data[:i] + data[i + 2 + ln:])
    # --- WebP with alpha (lossless)
    Image.fromarray(rgba, 'RGBA').save(os.path.join(HERE, 'webp_rgba_97x71.webp'), lossless=True)
    # --- a palette PNG for the padding colour of 'longest'
    pimg.save(os.path.join(HERE, 'png_palette_97x71.png'))
    Image.fromarray(rgb).save(os.path.join(HERE, 'png_rgb_97x71.png'))
    Image.fromarray(rgba, 'RGBA').save(os.path.join(HERE, 'png_rgba_97x71.png'))
    Image.fromarray(rgb[:, :, 1]).save(os.path.join(HERE, 'png_gray_71x97.png').replace('71x97', '97x71'))
    Image.fromarray(scene(71, 97, 2)).save(os.path.join(HERE, 'png_portrait_71x97.png'))


CASES = []


def case(file, **cfg):
    CASES.append((file, cfg))


def main():
    if '--check-goldens' in sys.argv:
        g = os.path.join(HERE, '..', '..', '..', 'shared', 'golden', 'preprocess')
        idx = json.load(open(os.path.join(g, 'index.json')))
        bad = [c['name'] for c in idx['cases']
               if hashlib.sha256(transform(os.path.join(g, c['image_file']))[1].tobytes()).hexdigest()
               != c['transform_trace']['rgb_crop_sha256']]
        print('goldens reproduced:', len(idx['cases']) - len(bad), 'of', len(idx['cases']), bad)
        return
    assert PIL.__version__ == '9.4.0', PIL.__version__
    make_images()
    every = sorted(f for f in os.listdir(HERE) if f.rsplit('.', 1)[-1] in ('png', 'gif', 'tif', 'jpg', 'webp'))
    for f in every:
        case(f, size=64)
    for f in ['png_rgb_97x71.png', 'png_palette_97x71.png', 'png_gray_97x71.png', 'png_rgba_97x71.png',
              'png_la_97x71.png', 'png_bilevel_97x71.png', 'png_gray16_97x71.png', 'tiff_cmyk_97x71.tif',
              'png_portrait_71x97.png', 'gif_trns_screen_105x80.gif']:
        case(f, size=64, resize_mode='longest', fill_color=0)
        case(f, size=64, resize_mode='longest', fill_color=7)
    for f in ['png_rgb_97x71.png', 'png_rgba_97x71.png', 'png_gray16_97x71.png', 'png_palette_97x71.png']:
        case(f, size=64, resize_mode='squash')
        case(f, size=64, resize_mode='squash', interpolation='bilinear')
        case(f, size=64, interpolation='bilinear')
        case(f, size=150, interpolation='bilinear', resize_mode='longest', fill_color=255)
    case('png_portrait_71x97.png', size=224)
    case('png_rgb_97x71.png', size=97, resize_mode='longest')    # no resize, pad only
    case('png_rgb_97x71.png', size=71)                             # no resize, crop only
    case('png_rgb_97x71.png', size=33, resize_mode='squash')
    for f in ['png_rgba_97x71.png', 'png_la_97x71.png', 'webp_rgba_97x71.webp']:
        case(f, size=97, resize_mode='squash')                     # vertical pass only (premultiplied)
        case(f, size=71, resize_mode='squash')                     # horizontal pass only
    out = []
    for f, cfg in CASES:
        try:
            mode, a = transform(os.path.join(HERE, f), **cfg)
        except Exception as e:   # the reference itself fails on this input/config
            print('SKIP', f, cfg, type(e).__name__, e)
            continue
        out.append({'file': f, 'pil_mode': mode, 'cfg': cfg,
                    'rgb_crop_sha256': hashlib.sha256(a.tobytes()).hexdigest(),
                    'rgb_mean': [round(float(a[:, :, c].mean()), 4) for c in range(3)]})
    json.dump({'generator': 'make_fixtures.py', 'pillow': PIL.__version__, 'cases': out},
              open(os.path.join(HERE, 'cases.json'), 'w'), indent=1)
    print(len(out), 'cases')


if __name__ == '__main__':
    main()
