"""`facecvt serve`: the face pipeline over HTTP (FastAPI + uvicorn), with a persistent face index.

    GET    /health         {"status": "ok", "model", "backend", "faces": N, ...}
    POST   /vectorize      multipart file -> [{"box", "score", "landmarks", "vector"}] per face
    POST   /register       multipart file + name -> {"name", "faces": [{"id", "box", "score", "landmarks"}]}
    POST   /search         multipart file + k -> [{"box", "score", "matches": [{"name", "id", "distance"}]}]
    DELETE /faces/{id}     -> {"id", "name", "deleted": true}
    GET    /docs           the OpenAPI page (schema at /openapi.json)

Bad input gets a 4xx answer `{"error": "<one line>"}`; an exception the server did not foresee is
a 500 that says it is a bug. The pipeline runs one request at a time (LiteRT and OpenCV-DNN are not
thread-safe; each runtime already uses every core); decoding and the index run beside it.
"""

# no `from __future__ import annotations`: FastAPI reads the endpoint annotations at run time

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facecvt.core.errors import FacecvtError
from facecvt.pipeline.images import MAX_PIXELS, decode_image

MAX_K = 100
MAX_NAME = 200


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    index_dir: Path | None = None
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = MAX_PIXELS
    log_level: str = "info"


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def create_app(pipeline, index, options: ServeOptions, spec_record: dict | None = None):
    """The FastAPI application around a loaded FacePipeline and an open FaceIndex."""
    import contextlib

    from fastapi import FastAPI, File, Form, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, Field
    from starlette.exceptions import HTTPException as StarletteHTTPException

    class FaceOut(BaseModel):
        box: list[float] = Field(description="x1, y1, x2, y2 in image pixels")
        score: float = Field(description="MTCNN's face probability (O-Net)")
        landmarks: list[list[float]] | None = Field(
            description="five (x, y): left eye, right eye, nose, left and right mouth corner")
        vector: list[float] = Field(description="the embedding (L2-normalised for FaceNet)")

    class RegisteredFace(BaseModel):
        id: int
        box: list[float]
        score: float
        landmarks: list[list[float]] | None

    class RegisterOut(BaseModel):
        name: str
        faces: list[RegisteredFace]

    class MatchOut(BaseModel):
        name: str
        id: int
        distance: float = Field(description="squared L2 between the vectors (released FaceNet: same person ~0.5, "
                                            "different ~2)")

    class SearchFace(BaseModel):
        box: list[float]
        score: float
        landmarks: list[list[float]] | None
        matches: list[MatchOut] = Field(description="nearest first")

    class DeleteOut(BaseModel):
        id: int
        name: str
        deleted: bool

    class HealthOut(BaseModel):
        status: str
        model: str | None
        backend: str | None
        faces: int
        detector_backend: str | None = Field(None, description="the runtime of the MTCNN nets")
        embedding_size: int
        input_size: int
        alignment: str
        persistent: bool
        pipeline: dict | None = Field(None, description="the pipeline's recorded parameters (detector, "
                                                         "alignment, preprocessing)")

    class ErrorOut(BaseModel):
        error: str

    errors = {400: {"model": ErrorOut}, 413: {"model": ErrorOut}, 415: {"model": ErrorOut}, 422: {"model": ErrorOut}}
    pipeline_lock = threading.Lock()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        index.close()  # saves the graph: a clean restart loads it without reconciling

    app = FastAPI(title="facecvt face service", version="1", lifespan=lifespan,
                  description="Detect (MTCNN), align and embed faces with a converted FaceNet, and register/search "
                              "them in a persistent index. Uploads are multipart `file` fields holding a JPEG or "
                              "PNG image.")

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(FacecvtError)
    async def facecvt_error(request: Request, exc: FacecvtError):
        return JSONResponse({"error": str(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return JSONResponse({"error": validation_line(exc.errors())}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        message = (str(exc).strip().splitlines() or [""])[0][:200]
        return JSONResponse({"error": f"internal error in facecvt: {type(exc).__name__} ({message}); a bug, "
                                      f"please report it"}, status_code=500)

    @app.middleware("http")
    async def limit_upload(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return JSONResponse({"error": "bad Content-Length header"}, status_code=400)
            if int(length) > options.max_upload_bytes + 64 * 1024:  # the multipart framing on top
                return JSONResponse({"error": f"upload of {int(length)} bytes is over the limit of "
                                              f"{options.max_upload_bytes}; send a smaller image"}, status_code=413)
        return await call_next(request)

    def read_upload(file: UploadFile) -> np.ndarray:
        data = file.file.read(options.max_upload_bytes + 1)
        if len(data) > options.max_upload_bytes:
            raise BadRequest(413, f"file is over the upload limit of {options.max_upload_bytes} bytes; "
                                  f"send a smaller image")
        try:
            return decode_image(data, what=f"file {file.filename!r}" if file.filename else "file",
                                max_pixels=options.max_pixels)
        except FacecvtError as error:
            status = 413 if "over the limit" in str(error) or "too many pixels" in str(error) else 400
            raise BadRequest(status, str(error)) from None

    def faces_of(image: np.ndarray):
        with pipeline_lock:
            return pipeline.faces(image)

    def face_fields(face) -> dict:
        record = face.to_json()
        record.pop("vector")
        return record

    @app.get("/health", response_model=HealthOut, summary="Service status and index size")
    def health():
        return {"status": "ok", "model": getattr(pipeline, "model", None),
                "backend": getattr(pipeline, "backend", None), "faces": len(index),
                "detector_backend": getattr(pipeline, "detector_backend", None),
                "embedding_size": index.dim, "input_size": pipeline.input_size,
                "alignment": pipeline.config.alignment, "persistent": index.folder is not None,
                "pipeline": spec_record}

    @app.post("/vectorize", response_model=list[FaceOut], responses=errors,
              summary="Every face of an image: box, score, landmarks, vector")
    def vectorize(file: UploadFile = File(..., description="JPEG or PNG image")):
        image = read_upload(file)
        return [face.to_json() for face in faces_of(image)]

    @app.post("/register", response_model=RegisterOut, responses=errors,
              summary="Add the faces of an image to the index under a name")
    def register(file: UploadFile = File(..., description="JPEG or PNG image"),
                 name: str = Form(..., description="the person's name")):
        name = name.strip()
        if not name or len(name) > MAX_NAME or "\n" in name:
            raise BadRequest(422, f"name must be 1 to {MAX_NAME} characters on one line")
        image = read_upload(file)
        faces = faces_of(image)
        if not faces:
            raise BadRequest(422, "no face found in the image; send a photo with a visible face (at least "
                                  f"{pipeline.config.detector.min_face_size:.0f} px)")
        ids = index.add(name, np.stack([f.vector for f in faces]), boxes=[face.to_json()["box"] for face in faces])
        return {"name": name, "faces": [{"id": i, **face_fields(f)} for i, f in zip(ids, faces)]}

    @app.post("/search", response_model=list[SearchFace], responses=errors,
              summary="For each face of an image, the k nearest registered faces")
    def search(file: UploadFile = File(..., description="JPEG or PNG image"),
               k: str = Form("1", description=f"matches per face, 1 to {MAX_K}")):
        try:
            k_value = int(k)
        except ValueError:
            raise BadRequest(422, f"k must be a whole number from 1 to {MAX_K}, got {k[:40]!r}") from None
        if not 1 <= k_value <= MAX_K:
            raise BadRequest(422, f"k must be from 1 to {MAX_K}, got {k_value}")
        image = read_upload(file)
        faces = faces_of(image)
        matches = index.search(np.stack([f.vector for f in faces]), k_value) if faces else []
        return [{**face_fields(f), "matches": [{"name": m.name, "id": m.id, "distance": m.distance} for m in found]}
                for f, found in zip(faces, matches)]

    @app.delete("/faces/{face_id}", response_model=DeleteOut, responses={404: {"model": ErrorOut}},
                summary="Remove one registered face")
    def delete_face(face_id: int):
        name = index.remove(face_id)
        if name is None:
            raise BadRequest(404, f"no face with id {face_id}")
        return {"id": face_id, "name": name, "deleted": True}

    return app


def validation_line(problems) -> str:
    """FastAPI's list of validation problems as one line: 'missing form field file; ...'."""
    parts = []
    for problem in problems:
        where = [str(p) for p in problem.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(where) or "request"
        if problem.get("type") == "missing":
            parts.append(f"missing field {field!r}")
        else:
            parts.append(f"{field}: {problem.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def serve(pipeline, spec, options: ServeOptions) -> None:
    """Open the index, warm the pipeline up, and run uvicorn until interrupted."""
    import uvicorn

    from facecvt.core.console import err
    from facecvt.pipeline.index import FaceIndex

    dim = warm_up(pipeline)
    index = FaceIndex(options.index_dir, dim, model=str(spec.embedder))
    where = f"index {options.index_dir}" if options.index_dir else "an in-memory index (lost at exit)"
    err.print(f"facecvt serve: {pipeline.backend} embedder {spec.embedder}, {dim}-D, alignment "
              f"{pipeline.config.alignment}; {where}: {index.start_report.get('faces', 0)} faces "
              f"({index.start_report.get('graph', '')}); docs at http://{options.host}:{options.port}/docs")
    app = create_app(pipeline, index, options, spec.to_dict())
    uvicorn.run(app, host=options.host, port=options.port, log_level=options.log_level, access_log=False)


def warm_up(pipeline) -> int:
    """Run the pipeline once on synthetic images (first calls trace and allocate); the vector size."""
    crop = np.zeros((pipeline.input_size, pipeline.input_size, 3), np.uint8)
    vector = pipeline.embed_aligned(crop[None])
    pipeline.detector.detect(np.full((64, 64, 3), 128, np.uint8))
    return int(vector.shape[1])
