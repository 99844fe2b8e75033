// Drives fluxserve with the Vercel AI SDK (`ai`'s generateImage and the `@ai-sdk/replicate` provider), unchanged.
// Usage: node ai_sdk.mjs <scenario>   (env: FLUXSERVE_BASE_URL, e.g. http://127.0.0.1:5000/v1; FLUXSERVE_KEY)
// Prints one JSON line: {ok, images: [{mediaType, bytes, base64}], warnings, requests: [{method, url, status, prefer,
// authorized, body}]}
// or {ok: false, error: {...}, requests}. `requests` are the HTTP calls the provider made (through its documented
// `fetch` option), with the JSON bodies it sent, so a test can assert what the provider puts in `input`.
import { createReplicate } from "@ai-sdk/replicate";
import { generateImage } from "ai";
import { deflateSync } from "node:zlib";

const requests = [];

async function recordingFetch(url, init = {}) {
  const response = await globalThis.fetch(url, init);
  let body = null;
  if (typeof init.body === "string") {
    try {
      body = JSON.parse(init.body);
    } catch {
      body = init.body;
    }
  }
  const headers = new Headers(init.headers ?? {});
  requests.push({
    method: init.method ?? "GET",
    url: String(url),
    status: response.status,
    prefer: headers.get("prefer"),
    authorized: headers.has("authorization"),
    body,
  });
  return response;
}

const replicate = createReplicate({
  apiToken: process.env.FLUXSERVE_KEY,
  baseURL: process.env.FLUXSERVE_BASE_URL,
  fetch: recordingFetch,
});

// A solid RGB PNG (no image library in node_modules).
function png(width, height) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc32 = (bytes) => {
    let c = 0xffffffff;
    for (const byte of bytes) c = crcTable[(c ^ byte) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (kind, data) => {
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    out.write(kind, 4, "ascii");
    data.copy(out, 8);
    out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
    return out;
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8);
  const row = Buffer.concat([Buffer.from([0]), Buffer.alloc(width * 3, Buffer.from([200, 120, 40]))]);
  const pixels = Buffer.concat(Array.from({ length: height }, () => row));
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", header),
    chunk("IDAT", deflateSync(pixels)),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

const dataUri = (bytes) => `data:image/png;base64,${bytes.toString("base64")}`;
// No retries: a failure should show at once, with the answer that caused it.
const generate = (options) => generateImage({ maxRetries: 0, ...options });

const scenarios = {
  // flux-schnell, one image: input {prompt, num_outputs: 1} plus what providerOptions add.
  schnell: () =>
    generate({
      model: replicate.image("black-forest-labs/flux-schnell"),
      prompt: "a red fox",
      providerOptions: { replicate: { megapixels: "0.25", output_format: "png" } },
    }),
  // n=2: maxImagesPerCall is 1 for non-flux-2 models, so two calls with num_outputs 1, a seed and an aspect ratio.
  schnellTwo: () =>
    generate({
      model: replicate.image("black-forest-labs/flux-schnell"),
      prompt: "two lighthouses",
      n: 2,
      aspectRatio: "16:9",
      seed: 7,
      providerOptions: { replicate: { megapixels: "0.25", num_inference_steps: 2 } },
    }),
  // size "1024x1024" goes into input as `size`, a field flux-dev does not have.
  devSize: () =>
    generate({
      model: replicate.image("black-forest-labs/flux-dev"),
      prompt: "a cabin in the snow",
      size: "1024x1024",
      providerOptions: { replicate: { num_inference_steps: 1, output_format: "jpg" } },
    }),
  devAspect: () =>
    generate({
      model: replicate.image("black-forest-labs/flux-dev"),
      prompt: "a cabin in the snow",
      aspectRatio: "2:3",
      providerOptions: { replicate: { megapixels: "0.25", num_inference_steps: 2 } },
    }),
  // prompt.images: the provider sends the first image as input.image (flux-dev's img2img field).
  devImage: () =>
    generate({
      model: replicate.image("black-forest-labs/flux-dev"),
      prompt: { text: "make it blue", images: [png(512, 384)] },
      providerOptions: { replicate: { num_inference_steps: 4, prompt_strength: 0.5 } },
    }),
  // flux-kontext-dev takes input_image (not image) and has no num_outputs: the image goes through providerOptions.
  kontext: () =>
    generate({
      model: replicate.image("black-forest-labs/flux-kontext-dev"),
      prompt: "make it night",
      providerOptions: {
        replicate: { input_image: dataUri(png(512, 512)), num_inference_steps: 4, output_format: "jpg" },
      },
    }),
};

function describe(error) {
  const out = { name: error?.name, message: String(error?.message ?? error) };
  for (const key of ["statusCode", "url", "responseBody", "requestBodyValues", "data", "cause"]) {
    if (error?.[key] !== undefined) out[key] = key === "cause" ? String(error.cause) : error[key];
  }
  if (out.requestBodyValues?.input) {
    // Data URIs make bodies long; keep them recognisable.
    for (const [k, v] of Object.entries(out.requestBodyValues.input)) {
      if (typeof v === "string" && v.startsWith("data:")) out.requestBodyValues.input[k] = `${v.slice(0, 40)}...`;
    }
  }
  return out;
}

function shorten(entries) {
  return entries.map((entry) => {
    const input = entry.body?.input;
    if (!input) return entry;
    const short = Object.fromEntries(
      Object.entries(input).map(([k, v]) => [k, typeof v === "string" && v.startsWith("data:") ? `${v.slice(0, 40)}...` : v]),
    );
    return { ...entry, body: { ...entry.body, input: short } };
  });
}

const name = process.argv[2];
if (!(name in scenarios)) {
  console.error(`unknown scenario ${name}; one of ${Object.keys(scenarios).join(", ")}`);
  process.exit(2);
}
scenarios[name]()
  .then((result) => {
    const images = result.images.map((image) => ({
      mediaType: image.mediaType,
      bytes: image.uint8Array.length,
      base64: image.base64,
    }));
    console.log(JSON.stringify({ ok: true, images, warnings: result.warnings, requests: shorten(requests) }));
  })
  .catch((error) => {
    console.log(JSON.stringify({ ok: false, error: describe(error), requests: shorten(requests) }));
  });
