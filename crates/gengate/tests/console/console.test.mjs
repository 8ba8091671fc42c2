// The console in a real browser: Debian's Chromium driven by playwright-core.
// Run by tests/it/console.rs, which starts gengate and passes, in the
// environment: BASE (gengate), USER_KEY and ADMIN_KEY, OTHER_TASK (a task of
// another key), SHOTS (where the 1280×800 screenshots go), CHROMIUM.
// Prints one JSON line of what it saw; exits non-zero on the first failure.
import { chromium } from 'playwright-core';

const { BASE, USER_KEY, ADMIN_KEY, OTHER_TASK, SHOTS } = process.env;
const seen = { pages: [] };
const check = (ok, what) => { if (!ok) throw new Error(`${what}: ${JSON.stringify(seen)}`); };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // Loopback only: any other host fails to resolve, and Chromium's own
  // background traffic is off.
  args: ['--no-sandbox', '--autoplay-policy=no-user-gesture-required', '--disable-quic',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--no-first-run', '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1'],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  // Everything the page asks for must come from gengate.
  const foreign = [];
  page.on('request', (r) => {
    const url = r.url();
    if (!url.startsWith(BASE) && !url.startsWith('data:') && !url.startsWith('blob:')) foreign.push(url);
  });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  const shot = async (name) => {
    await page.screenshot({ path: `${SHOTS}/${name}.png` });
    seen.pages.push(name);
  };
  const signIn = async (key) => {
    await page.goto(`${BASE}/console/`);
    await page.fill('input[name=key]', key);
    await page.click('#sign-in button[type=submit]');
    await page.waitForSelector('table#tasks');
  };

  // A key holder signs in and sees its tasks.
  await page.goto(`${BASE}/console/`);
  await page.waitForSelector('#sign-in');
  await shot('sign-in');
  await signIn(USER_KEY);
  const loadedAt = await page.evaluate(() => window.gengateLoadedAt);

  // Submits from the playground; on the tasks page its row goes from
  // pending (or processing) to completed, live, without a reload.
  await page.click('a[href="#/playground"]');
  // Markup in a prompt stays text everywhere the console shows it.
  await page.fill('textarea[name=prompt]', '<b id="injected">a lighthouse</b> at dusk');
  await shot('playground');
  await page.click('#playground button[type=submit]');
  const id = await (await page.waitForSelector('#playground-task a')).textContent();
  seen.task = id;
  await page.click('a[href="#/tasks"]');
  const row = `tr[data-task="${id}"]`;
  await page.waitForSelector(`${row}[data-state="pending"], ${row}[data-state="processing"]`, { timeout: 10000 });
  seen.before = await page.getAttribute(row, 'data-state');
  await page.waitForSelector(`${row}[data-state="completed"]`, { timeout: 60000 });
  check(await page.evaluate(() => window.gengateLoadedAt) === loadedAt, 'the tasks page reloaded');
  await shot('tasks');

  // Its page: the video plays and seeks, the thumbnail and palette render,
  // the timeline ends completed.
  await page.click(`${row} a`);
  await page.waitForSelector('video[data-role=video]');
  await page.waitForSelector('#events tr[data-state=completed]');
  seen.video = await page.evaluate(async () => {
    const v = document.querySelector('video[data-role=video]');
    if (v.readyState < 1) await new Promise((r) => v.addEventListener('loadedmetadata', r, { once: true }));
    v.currentTime = 2.5;
    await new Promise((r) => v.addEventListener('seeked', r, { once: true }));
    const from = v.currentTime;
    await v.play();
    // Played on: the clock moves (given time on a busy machine).
    await new Promise((r) => {
      const done = () => { if (v.currentTime > from + 0.2) r(); };
      v.addEventListener('timeupdate', done);
      setTimeout(r, 15000);
    });
    return { duration: v.duration, from, now: v.currentTime, width: v.videoWidth, height: v.videoHeight };
  });
  check(seen.video.duration > 4 && Math.abs(seen.video.from - 2.5) < 0.1, 'the video seeks');
  check(seen.video.now > seen.video.from + 0.2 && seen.video.width > 0, 'the video plays');
  seen.images = await page.evaluate(() => [...document.querySelectorAll('img[data-role]')]
    .map((i) => ({ role: i.dataset.role, width: i.naturalWidth })));
  check(seen.images.some((i) => i.role === 'thumbnail' && i.width > 0), 'the thumbnail renders');
  seen.palette = await page.evaluate(() => {
    const c = document.querySelector('canvas.palette');
    const colours = c.dataset.colours.split(' ');
    const px = c.getContext('2d').getImageData(10, 10, 1, 1).data;
    const hex = '#' + [...px.slice(0, 3)].map((b) => b.toString(16).padStart(2, '0')).join('');
    return { count: colours.length, first: colours[0], drawn: hex };
  });
  check(seen.palette.count === 25 && seen.palette.first === seen.palette.drawn, 'the palette is drawn');
  const request = await page.textContent('pre');
  check(request.includes('<b id=\\"injected\\">'), `the prompt is shown as text (${request})`);
  check(await page.$('#injected') === null, 'the prompt is never parsed as HTML');
  await shot('task');

  // A slow task is canceled from its page.
  await page.click('a[href="#/playground"]');
  // It starts from an image uploaded with the form (sent inside the request).
  await page.fill('textarea[name=prompt]', 'to be canceled');
  await page.setInputFiles('input[name=upload]', { name: 'start.png', mimeType: 'image/png', buffer: Buffer.from(
    'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg==', 'base64') });
  await page.click('#playground button[type=submit]');
  const slow = await (await page.waitForSelector('#playground-task a')).textContent();
  await page.click('#playground-task a');
  await page.waitForSelector('pre');
  const uploaded = await page.textContent('pre');
  check(/"images": \[\s*\{\s*"role": "start"\s*\}/.test(uploaded), `the uploaded image is the start frame (${uploaded})`);
  await page.click('#cancel');
  await page.waitForSelector('#task-head [data-state=canceled]');
  seen.canceled = slow;

  // Another key's task is not there, not even by its URL.
  await page.goto(`${BASE}/console/#/tasks/${OTHER_TASK}`);
  const refused = await (await page.waitForSelector('[role=alert]')).textContent();
  check(refused.includes('No task'), `another key's task is refused (${refused})`);
  await page.click('a[href="#/tasks"]');
  await page.waitForSelector('table#tasks tbody tr');
  check(await page.$(`tr[data-task="${OTHER_TASK}"]`) === null, "another key's task is not listed");
  await page.click('a[href="#/usage"]');
  await page.waitForSelector('#tasks-per-day svg.chart rect');
  // Requests reach the report within seconds: the day's bar appears.
  for (let i = 0; i < 20 && !(await page.$('#requests-per-day svg.chart rect')); i++) {
    await page.waitForTimeout(1000);
    await page.click('a[href="#/tasks"]');
    await page.click('a[href="#/usage"]');
    await page.waitForSelector('#tasks-per-day svg.chart rect');
  }
  check(await page.$('#requests-per-day svg.chart rect') !== null, 'requests per day are drawn');
  await shot('usage');

  // An admin: creates a key (its secret shown once), sees the other key's task.
  await page.click('#sign-out');
  await signIn(ADMIN_KEY);
  await page.waitForSelector(`tr[data-task="${OTHER_TASK}"]`);
  await page.click('a[href="#/keys"]');
  await page.fill('#new-key input[name=name]', 'made in the console');
  await page.click('#new-key button[type=submit]');
  const secret = await (await page.waitForSelector('#new-secret')).textContent();
  seen.secret = secret.slice(0, 3);
  check(seen.secret === 'gg_', 'a new key is shown once');
  await shot('keys');
  await page.reload();
  await page.waitForSelector('table#keys tbody tr');
  check(!(await page.content()).includes(secret), 'the secret is not shown again');
  const listed = await page.evaluate(async () => (await fetch('/admin/keys', {
    headers: { authorization: `Bearer ${sessionStorage.getItem('gengate.key')}` } })).text());
  check(listed.includes('made in the console') && !listed.includes(secret), 'the key list holds no secret');
  await page.click('a[href="#/channels"]');
  await page.waitForSelector('table#channels tbody tr');
  // Adds a channel, sees its health, disables it.
  await page.fill('#channel-form textarea', JSON.stringify({ name: 'spare', provider: 'sandbox', models: { 'spare-model': 'x' } }));
  await page.click('#channel-form button[type=submit]');
  await page.waitForSelector('tr[data-channel="spare"] td.health');
  await page.click('tr[data-channel="spare"] button:has-text("Disable")');
  await page.waitForSelector('tr[data-channel="spare"] button:has-text("Enable")');
  seen.sandboxHealth = await page.textContent('tr[data-channel="sandbox"] td.health');
  // Sets a price; it is listed, as the API's.
  await page.fill('#price-form input[name=model]', 'ray-2');
  await page.fill('#price-form input[name=per_task]', '7');
  await page.click('#price-form button[type=submit]');
  await page.waitForSelector('tr[data-price="ray-2"]');
  seen.price = await page.textContent('tr[data-price="ray-2"] td:nth-child(2)');
  await shot('channels');
  await page.goto(`${BASE}/console/#/tasks/${OTHER_TASK}`);
  await page.waitForSelector('#task-head');
  await shot('admin-task');

  seen.foreign = foreign;
  seen.errors = errors;
  check(foreign.length === 0, 'nothing loaded from another host');
  console.log(JSON.stringify(seen));
} finally {
  await browser.close();
}
