// A form that acts on hospital systems asks once more before it is sent (the DICOM page's
// recall and purge forms): its submit shows the question in `<id>-confirm` (text in
// `<id>-confirm-text`); `<id>-yes` sends, `<id>-no` goes back; what came of it goes to `said`,
// a refusal to `<id>-error`, with the fields the node named.
export function problemText(err) {
  const fields = (err.problem?.errors || []).map((e) => `${String(e.loc).replace(/^body\//, "")}: ${e.msg}`);
  return [err.message, ...fields].join("; ");
}

// `ask(data)`: [the body, the question]; `send(body)`: what to say once the node took it;
// `then()`: what to do after (the list redrawn). The form `<id>-form` is found by its id.
export function confirmedForm(id, said, { ask, send, then }) {
  const form = document.getElementById(`${id}-form`);
  const box = document.getElementById(`${id}-confirm`);
  const yes = document.getElementById(`${id}-yes`);
  const error = document.getElementById(`${id}-error`);
  const submit = () => form.querySelector("button[type=submit]");
  let asked = null;
  const close = () => {
    box.hidden = true;
    asked = null;
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const [body, question] = ask(new FormData(form));
    asked = body;
    document.getElementById(`${id}-confirm-text`).textContent = question;
    said.textContent = "";
    error.hidden = true;
    box.hidden = false;
    yes.focus();
  });
  document.getElementById(`${id}-no`).addEventListener("click", () => {
    close();
    submit().focus();
  });
  yes.addEventListener("click", async () => {
    const body = asked;
    if (!body) return;
    yes.disabled = true;
    try {
      said.textContent = await send(body);
      form.reset();
      close();
      await then();
      if (document.activeElement === document.body) submit().focus(); // the box went with it
    } catch (err) {
      close();
      error.textContent = problemText(err);
      error.hidden = false;
      submit().focus();
    } finally {
      yes.disabled = false;
    }
  });
  return form;
}
