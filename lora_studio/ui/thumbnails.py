"""Lazy thumbnails: a bounded LRU cache of QImages and a small worker pool that
decodes only what the grid asks for, newest request first, so scrolling through
10,000 images stays smooth and memory stays flat."""
from __future__ import annotations

import threading
from collections import OrderedDict

from PySide6.QtCore import QObject, QPoint, QRect, QRunnable, QSize, Qt, QThreadPool, QTimer
from PySide6.QtGui import QColor, QImage, QImageReader, QPainter, QPen
from PySide6.QtWidgets import QStyle, QStyledItemDelegate

THUMB_SIZE = 128
MAX_PENDING = 400  # requests beyond this (scrolled far past) are dropped, oldest first


class ThumbnailCache:
    """LRU of decoded thumbnails, bounded by bytes."""

    def __init__(self, max_bytes: int = 96 * 1024 * 1024):
        self.max_bytes = max_bytes
        self._images: OrderedDict[object, QImage] = OrderedDict()
        self._bytes = 0

    def get(self, key) -> QImage | None:
        img = self._images.get(key)
        if img is not None:
            self._images.move_to_end(key)
        return img

    def put(self, key, img: QImage) -> None:
        old = self._images.pop(key, None)
        if old is not None:
            self._bytes -= old.sizeInBytes()
        self._images[key] = img
        self._bytes += img.sizeInBytes()
        while self._bytes > self.max_bytes and len(self._images) > 1:
            _, dropped = self._images.popitem(last=False)
            self._bytes -= dropped.sizeInBytes()

    def clear(self) -> None:
        self._images.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._images)

    @property
    def nbytes(self) -> int:
        return self._bytes


def read_scaled(path: str, size: int = THUMB_SIZE) -> QImage:
    """Decode an image scaled to fit `size` (JPEG decodes at reduced scale), EXIF
    orientation applied. A null QImage when the file cannot be read."""
    reader = QImageReader(path)
    reader.setAutoTransform(True)
    full = reader.size()
    if full.isValid() and (full.width() > size or full.height() > size):
        reader.setScaledSize(full.scaled(QSize(size, size), Qt.AspectRatioMode.KeepAspectRatio))
    img = reader.read()
    if img.isNull():
        return QImage()
    if img.width() > size or img.height() > size:  # formats that ignore setScaledSize
        img = img.scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio,
                         Qt.TransformationMode.SmoothTransformation)
    return img


def broken_image(size: int = THUMB_SIZE) -> QImage:
    img = QImage(size, size, QImage.Format.Format_ARGB32)
    img.fill(QColor(60, 30, 30))
    p = QPainter(img)
    p.setPen(QPen(QColor(220, 80, 80), 4))
    p.drawLine(24, 24, size - 24, size - 24)
    p.drawLine(size - 24, 24, 24, size - 24)
    p.end()
    return img


class _Worker(QRunnable):
    def __init__(self, loader: "ThumbnailLoader"):
        super().__init__()
        self.loader = loader

    def run(self) -> None:
        loader = self.loader
        while True:
            job = loader._take()
            if job is None:
                return
            generation, key, path = job
            img = read_scaled(path, loader.size)
            with loader._lock:
                loader._done.append((generation, key, img))


class ThumbnailLoader(QObject):
    """request(key, path) decodes in the pool; finished thumbnails are handed to
    `on_ready(key, image)` on the GUI thread in batches (a null image means
    unreadable). No signal per image: a 10,000-image scroll would mean 10,000
    queued events. reset() forgets pending work (e.g. a new folder)."""

    def __init__(self, on_ready, parent=None, size: int = THUMB_SIZE, threads: int = 2,
                 drain_ms: int = 30):
        super().__init__(parent)
        self.on_ready = on_ready
        self.size = size
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(threads)
        self._lock = threading.Lock()
        self._pending: OrderedDict[object, str] = OrderedDict()
        self._in_flight: set = set()
        self._done: list = []
        self._running = 0
        self._generation = 0
        self._timer = QTimer(self)
        self._timer.setInterval(drain_ms)
        self._timer.timeout.connect(self._drain)

    def request(self, key, path: str) -> None:
        with self._lock:
            if key in self._in_flight:
                return
            self._pending.pop(key, None)
            self._pending[key] = path  # newest at the end: taken first
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)
            start = self._running < self.pool.maxThreadCount()
            if start:
                self._running += 1
        if start:
            self.pool.start(_Worker(self))
        if not self._timer.isActive():
            self._timer.start()

    def _take(self):
        with self._lock:
            if not self._pending:
                self._running -= 1
                return None
            key, path = self._pending.popitem(last=True)
            self._in_flight.add(key)
            return self._generation, key, path

    def _drain(self) -> None:
        with self._lock:
            done, self._done = self._done, []
            generation = self._generation
            for _gen, key, _img in done:
                self._in_flight.discard(key)
            idle = not self._pending and not self._in_flight and self._running == 0
        for gen, key, img in done:
            if gen == generation:
                self.on_ready(key, img)
        if idle:
            self._timer.stop()

    def reset(self) -> None:
        with self._lock:
            self._pending.clear()
            self._in_flight.clear()
            self._done.clear()
            self._generation += 1

    def wait(self, msecs: int = 5000) -> bool:
        """Wait for the workers, then deliver what they finished."""
        ok = self.pool.waitForDone(msecs)
        self._drain()
        return ok


class ThumbnailDelegate(QStyledItemDelegate):
    """A fixed-size cell: the thumbnail centred in a square box, the name elided
    under it, a red corner mark on images with a health problem."""
    PAD = 6
    TEXT_H = 18
    PROBLEM_ROLE = Qt.ItemDataRole.UserRole + 1
    LOSS_ROLE = Qt.ItemDataRole.UserRole + 2   # a LossBadge (ui/loss_state.py) or None

    def __init__(self, size: int = THUMB_SIZE, parent=None):
        super().__init__(parent)
        self.size = size

    def sizeHint(self, option, index) -> QSize:
        return QSize(self.size + 2 * self.PAD, self.size + self.TEXT_H + 2 * self.PAD)

    def paint(self, painter: QPainter, option, index) -> None:
        painter.save()
        r = option.rect
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        if selected:
            painter.fillRect(r, option.palette.highlight())
        elif option.state & QStyle.StateFlag.State_MouseOver:
            painter.fillRect(r, option.palette.alternateBase())
        img = index.data(Qt.ItemDataRole.DecorationRole)
        box = QRect(r.x() + self.PAD, r.y() + self.PAD, self.size, self.size)
        if isinstance(img, QImage) and not img.isNull():
            target = QRect(QPoint(0, 0), img.size().scaled(box.size(), Qt.AspectRatioMode.KeepAspectRatio))
            target.moveCenter(box.center())
            painter.drawImage(target, img)
        if index.data(self.PROBLEM_ROLE):
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor("#e53935"))
            painter.drawEllipse(QRect(box.right() - 13, box.top() + 3, 10, 10))
        badge = index.data(self.LOSS_ROLE)
        if badge is not None:
            self._paint_loss(painter, option, box, badge)
        text_rect = QRect(r.x() + 2, box.bottom() + 3, r.width() - 4, self.TEXT_H)
        fg = index.data(Qt.ItemDataRole.ForegroundRole)
        painter.setPen(option.palette.highlightedText().color() if selected
                       else (fg if isinstance(fg, QColor) else option.palette.text().color()))
        text = option.fontMetrics.elidedText(index.data(Qt.ItemDataRole.DisplayRole) or "",
                                             Qt.TextElideMode.ElideMiddle, text_rect.width())
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop, text)
        painter.restore()

    @staticmethod
    def _paint_loss(painter: QPainter, option, box: QRect, badge) -> None:
        """The loss in the thumbnail's bottom-left corner, from grey (best learned of
        the run) to red (worst)."""
        metrics = option.fontMetrics
        w, h = metrics.horizontalAdvance(badge.text) + 8, metrics.height() + 2
        rect = QRect(box.left() + 2, box.bottom() - h - 1, w, h)
        cool, hot = QColor(70, 70, 76), QColor(211, 47, 47)
        t = max(0.0, min(1.0, badge.heat))
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(int(cool.red() + t * (hot.red() - cool.red())),
                                int(cool.green() + t * (hot.green() - cool.green())),
                                int(cool.blue() + t * (hot.blue() - cool.blue())), 225))
        painter.drawRoundedRect(rect, 3, 3)
        painter.setPen(QColor("white"))
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, badge.text)
